"""``pairviz_jax._util``: atomic writes, the progress line, numpy unit vectors."""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
import pytest

from pairviz_jax import _util


def test_atomic_path_renames_on_success_and_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.npz"
    with _util.atomic_path(path, ".npz") as tmp:
        assert tmp.endswith(".npz") and not path.exists()
        np.savez(tmp, x=np.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]
    with pytest.raises(RuntimeError), _util.atomic_path(path, ".npz") as tmp:
        np.savez(tmp, x=np.arange(5))
        raise RuntimeError("half-way")
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]  # no temporary file left
    with np.load(path) as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))


@pytest.mark.parametrize("kind", [str, pathlib.Path])
def test_write_text_atomic_on_strings_and_path_objects(tmp_path, kind):
    path = kind(tmp_path / "t.txt")
    _util.write_text_atomic(path, "one\n")
    _util.write_text_atomic(path, "two\n")
    assert pathlib.Path(path).read_text(encoding="utf-8") == "two\n"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_progress_line_counts_its_unit_with_a_label():
    out = io.StringIO()
    bar = _util.Progress(10, stream=out, every=3600.0, unit="images", label="report: thumbs ")
    bar.update(4)  # the first update writes (none before)
    bar.update(3)  # within ``every``: silent
    bar.close()  # the final line, forced
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("report: thumbs [#########") and "4/10 images" in lines[0]
    assert "7/10 images  70.0%" in lines[1] and "images/s" in lines[1]
    silent = _util.Progress(5, stream=None)
    silent.update(5)
    silent.close()
    assert silent.done == 5


def test_unit_np_floors_the_norm():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    u = _util.unit_np(x)
    np.testing.assert_array_equal(u, np.array([[0.6, 0.8], [0.0, 0.0]], np.float32))
    assert u.dtype == np.float32
