"""torch.save archives read with NumPy alone (``checkpoints._torch_zip``), never running code.

The fixtures are PyTorch's own files (``tools/make_torch_fixtures.py``, committed); what
torch reads back from them is the reference, so none of this needs torch installed.
"""

import builtins
import os
import pickle
import re
import zipfile

import numpy as np
import pytest

from pairviz_jax import checkpoints
from pairviz_jax.checkpoints import CheckpointError, _torch_zip

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture
def no_torch(monkeypatch):
    """``import torch`` fails, as on a machine without the torch extra."""
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)


def _flat(obj, prefix="", out=None):
    out = {} if out is None else out
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flat(v, f"{prefix}.{k}" if prefix else str(k), out)
    return out


def _buffer(a):
    """The array that owns ``a``'s memory (through as_strided's holder too)."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def test_every_dtype_and_layout_equals_what_torch_reads(no_torch):
    got = _flat(_torch_zip.read(os.path.join(FIXTURES, "torch_variants.pth")))
    with np.load(os.path.join(FIXTURES, "torch_variants.npz")) as z:
        want = {k: z[k] for k in z.files}
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        if k.endswith("bf16"):
            assert str(g.dtype) == "bfloat16"
            g = g.astype(np.float32)
        else:
            assert g.dtype == w.dtype, k
        np.testing.assert_array_equal(g, w, err_msg=k)
    # Views of one storage are views of one buffer, read once (as torch's tensors share
    # their storage); views of distinct ranges stay distinct.
    a, b = got["state_dict.shared_a"], got["state_dict.shared_b"]
    assert _buffer(a) is _buffer(b) and not np.shares_memory(a, b)
    a[...] = -1
    assert (b >= 0).all()


@pytest.mark.parametrize("name", ["authors_vit", "authors_resnet", "dinov2_hub"])
def test_real_fixtures_read_without_torch_equal_their_safetensors_twins(no_torch, name):
    a = checkpoints.read(os.path.join(FIXTURES, f"{name}.pth"))
    b = checkpoints.read(os.path.join(FIXTURES, f"{name}.safetensors"))
    assert (a.container, b.container, a.layout) == ("torch", "safetensors", b.layout)
    pth, twin = a.params, b.params
    assert pth.keys() == twin.keys()
    for k in twin:
        np.testing.assert_array_equal(pth[k], np.asarray(twin[k], pth[k].dtype), err_msg=k)
        assert pth[k].dtype == np.float32 or not np.issubdtype(pth[k].dtype, np.floating)


class _Payload:
    """Unpickling this would create ``marker``: proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_archive_whose_pickle_calls_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": _Payload(str(marker))}, protocol=2))
        z.writestr("evil/version", "3\n")
    # The pickle names open by its __module__: "io" up to Python 3.11, "_io" from 3.12.
    where = re.escape(open.__module__)
    with pytest.raises(CheckpointError, match=rf"evil\.pth: refused .*asks for {where}\.open"):
        checkpoints.read(path)
    assert not marker.exists()


def test_corrupt_archives_are_one_clear_line(tmp_path):
    src = os.path.join(FIXTURES, "torch_variants.pth")
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    storage = next(n for n in members if "/data/" in n)
    cases = {
        "short.pth": {**members, storage: members[storage][:-2]},
        "missing.pth": {n: b for n, b in members.items() if n != storage},
    }
    for name, content in cases.items():
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            for n, b in content.items():
                z.writestr(n, b)
        with pytest.raises(CheckpointError) as e:
            checkpoints.read(path)
        msg = str(e.value)
        assert (
            msg.startswith(f"{path}: refused or unreadable torch.save archive") and "\n" not in msg
        )
        assert ("bytes for" in msg) if name == "short.pth" else ("missing storage member" in msg)


def test_legacy_pickle_files_without_torch_say_how_to_install_the_cpu_build(no_torch, tmp_path):
    path = tmp_path / "old.pth"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=2))  # never unpickled here
    with pytest.raises(ImportError, match="CPU-only build") as info:
        checkpoints.read(path)
    assert "legacy" in str(info.value) and "convert_file" in str(info.value)
