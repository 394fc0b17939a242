"""Hand-made hostile weight files: each is refused in one line, or read, within bounded memory.

Every file is built here byte by byte (a minimal zip writer, pickle opcodes, safetensors
headers), small on disk but promising gigabytes. The memory-hungry ones are read in one
subprocess (``_MEASURE``) whose address space is capped a few hundred MB above what its
imports take, so a loader that believes the file fails there with ``MemoryError`` instead
of swapping the machine; its peak resident size (``ru_maxrss``) is reported per file.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import pairviz_jax
from pairviz_jax import runs
from pairviz_jax.checkpoints import CheckpointError, _torch_zip
from pairviz_jax.checkpoints._io import read_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pairviz_jax.__file__)))
BOMB = 512 << 20  # the bytes a bomb inflates to (the cap below leaves it no room)
HEADROOM_MB = 400  # address space allowed above the subprocess's imports
RSS_MB = 200  # bound on the growth of the peak resident size over the imports


def _small(r) -> bool:
    """Peak allocation within 4x the file plus 8 MB, and no resident growth beyond RSS_MB."""
    return r["peak_mb"] < 4 * r["file_mb"] + 8 and r["rss_growth_mb"] < RSS_MB


# ----------------------------------------------------------------------- file builders


def _zip(path, members) -> None:
    """A zip written field by field: ``members`` are dicts with ``name`` and ``data``.

    Optional keys: ``raw`` (bytes as stored, default ``data``), ``method`` (0 stored,
    8 deflate), ``crc`` and ``size`` (declared; default the true ones), ``flags``.
    """
    out, central = bytearray(), bytearray()
    for m in members:
        name, data = m["name"].encode(), m.get("data", b"")
        raw = m.get("raw", data)
        crc, size = m.get("crc", zlib.crc32(data)), m.get("size", len(data))
        fields = (m.get("flags", 0), m.get("method", 0), 0, 0, crc, len(raw), size, len(name))
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, *fields, 0) + name + raw
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, *fields, 0, 0, 0, 0, 0, offset)
        central += name
    n = len(members)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    with open(path, "wb") as f:
        f.write(out)


_DEFLATED_ZEROS: dict[int, bytes] = {}


def _deflated_zeros(n: int, head: bytes = b"") -> bytes:
    """Raw deflate of ``head`` + ``n`` zero bytes (512 MB -> ~2 MB), without holding them."""
    key = hash((n, head))
    if key not in _DEFLATED_ZEROS:
        c, chunk = zlib.compressobj(1, zlib.DEFLATED, -15), bytes(1 << 20)
        parts = [c.compress(head)] + [c.compress(chunk) for _ in range(n >> 20)]
        _DEFLATED_ZEROS[key] = b"".join(parts) + c.flush()
    return _DEFLATED_ZEROS[key]


def _u(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _i(n: int) -> bytes:  # BININT or LONG1
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def _tup(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key="0", numel=1, size=(1,), stride=(1,), offset=0, kind="FloatStorage") -> bytes:
    """Pickle opcodes of ``torch._utils._rebuild_tensor_v2(storage, offset, size, ...)``."""
    storage = _tup([_u("storage"), b"ctorch\n" + kind.encode() + b"\n", _u(key), _u("cpu")])
    storage = storage[:-1] + _i(numel) + b"tQ"  # the persistent id tuple, then BINPERSID
    args = [storage, _i(offset), _tup(map(_i, size)), _tup(map(_i, stride)), b"\x89"]
    args.append(b"ccollections\nOrderedDict\n)R")
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + _tup(args) + b"R"


def _dict(items) -> bytes:
    return b"}(" + b"".join(_u(k) + v for k, v in items) + b"u"


def _pkl(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _torch(path, pkl: bytes, storages: dict, **data_pkl) -> None:
    members = [
        {"name": "a/data.pkl", "data": pkl, **data_pkl},
        {"name": "a/byteorder", "data": b"little"},
    ]
    members += [{"name": f"a/data/{k}", "data": v} for k, v in storages.items()]
    _zip(path, members)


def _one_tensor(path, **member) -> None:
    """A valid one-tensor archive whose ``data.pkl`` entry gets ``member``'s overrides."""
    data = np.arange(4, dtype=np.float32).tobytes()
    pkl = _pkl(_dict([("w", _tensor(numel=4, size=(4,)))]))
    _zip(path, [{"name": "a/data/0", "data": data}, {"name": "a/data.pkl", "data": pkl, **member}])


def _safetensors(path, header: bytes, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


# ------------------------------------------------------------- the memory-bound attacks


def _build_memory_attacks(d) -> dict[str, str]:
    """Writes each hostile file under ``d``; ``{attack: path}``."""
    p = {}
    four = np.zeros(1, np.float32).tobytes()

    p["stride0"] = d / "stride0.pth"  # 4 bytes of storage viewed as 4 GB
    _torch(p["stride0"], _pkl(_dict([("w", _tensor(size=(2**30,), stride=(0,)))])), {"0": four})

    p["overlap"] = d / "overlap.pth"  # 256 KB viewed as 2**15 x 2**15 floats
    sd = _dict([("w", _tensor(numel=2**16, size=(2**15, 2**15), stride=(1, 1)))])
    _torch(p["overlap"], _pkl(sd), {"0": bytes(2**18)})

    p["shared"] = d / "shared.pth"  # 1,000 tensors, one 1 MB float16 storage
    items = [
        (f"w{i}", _tensor(numel=2**19, size=(2**19,), kind="HalfStorage")) for i in range(1000)
    ]
    _torch(p["shared"], _pkl(_dict(items)), {"0": bytes(2**20)})

    bomb = {"method": 8, "raw": _deflated_zeros(BOMB), "crc": 0, "size": BOMB}
    # Stored padding of 1/16 of the bomb keeps the archive within 32x, so that the checks
    # past the archive-level one (numel, byteorder, pickle size) are the ones that answer.
    pad = {"name": "a/pad", "data": bytes(BOMB // 16)}
    p["bomb_storage"] = d / "bomb_storage.pth"  # numel 1, the member inflates to 512 MB
    _zip(
        p["bomb_storage"],
        [
            {"name": "a/data.pkl", "data": _pkl(_dict([("w", _tensor())]))},
            {"name": "a/data/0", **bomb},
            pad,
        ],
    )
    p["bomb_honest"] = d / "bomb_honest.pth"  # numel matches the 512 MB: ratio ~230
    sd = _dict([("w", _tensor(numel=BOMB // 4, size=(BOMB // 4,)))])
    _zip(p["bomb_honest"], [{"name": "a/data.pkl", "data": _pkl(sd)}, {"name": "a/data/0", **bomb}])
    p["bomb_pickle"] = d / "bomb_pickle.pth"  # data.pkl itself inflates to 512 MB
    _zip(p["bomb_pickle"], [{"name": "a/data.pkl", **bomb}, pad])
    p["bomb_byteorder"] = d / "bomb_byteorder.pth"
    _zip(
        p["bomb_byteorder"],
        [
            {"name": "a/data.pkl", "data": _pkl(_dict([("w", _tensor())]))},
            {"name": "a/byteorder", **bomb},
            {"name": "a/data/0", "data": four},
            pad,
        ],
    )

    p["lying_size"] = d / "lying_size.pth"  # declares 4 bytes, its stream inflates to 512 MB
    lie = {**bomb, "size": 4, "crc": zlib.crc32(four)}
    _zip(
        p["lying_size"],
        [
            {"name": "a/data.pkl", "data": _pkl(_dict([("w", _tensor())]))},
            {"name": "a/data/0", **lie},
        ],
    )

    p["zip_overlap"] = d / "zip_overlap.pth"  # 1,000 directory entries, one 1 MB body
    items = [(f"w{i}", _tensor(key=str(i), numel=2**18, size=(2**18,))) for i in range(1000)]
    _zip_overlapping(p["zip_overlap"], _pkl(_dict(items)), bytes(2**20), 1000)

    p["memo"] = d / "memo.pth"  # LONG_BINPUT 2**28: a 2**28-slot memo in the C unpickler
    body = b"}r" + struct.pack("<I", 2**28) + b"(" + _u("w") + _tensor() + b"u"
    _torch(p["memo"], _pkl(body), {"0": four})

    p["npz_header"] = d / "npz_header.npz"  # a .npy header promising 4 GB in 16 bytes
    head = _npy_header("<f4", (2**30,))
    _zip(p["npz_header"], [{"name": "w.npy", "data": head + bytes(16)}])
    p["npz_bomb"] = d / "npz_bomb.npz"
    head = _npy_header("<f4", (BOMB // 4,))
    raw = _deflated_zeros(BOMB, head)
    _zip(
        p["npz_bomb"],
        [{"name": "w.npy", "method": 8, "raw": raw, "crc": 0, "size": len(head) + BOMB}],
    )

    p["st_overlap"] = d / "st_overlap.safetensors"  # 1,000 tensors on one 1 MB range
    header = {
        f"w{i}": {"dtype": "F32", "shape": [2**18], "data_offsets": [0, 2**20]} for i in range(1000)
    }
    _safetensors(p["st_overlap"], json.dumps(header).encode(), bytes(2**20))

    p["dag"] = d / "dag.pth"  # 40 dicts, each holding the previous twice: 2**40 paths
    body = _dict([("w", _tensor())]) + b"q\x00"
    for i in range(1, 41):
        body += b"}(" + _u("a") + b"h" + bytes([i - 1]) + _u("b") + b"h" + bytes([i - 1]) + b"u"
        body += b"q" + bytes([i])
    _torch(p["dag"], _pkl(body), {"0": four})
    return {k: str(v) for k, v in p.items()}


def _zip_overlapping(path, pkl: bytes, storage: bytes, n: int) -> None:
    """A torch archive whose ``n`` storage entries all point at one stored body."""
    out = bytearray()
    entries = []
    for name, data in (("a/data.pkl", pkl), ("a/data/0", storage)):
        entries.append((name, data, len(out)))
        raw = name.encode()
        fields = (0, 0, 0, 0, zlib.crc32(data), len(data), len(data), len(raw))
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, *fields, 0) + raw + data
    entries += [(f"a/data/{i}", storage, entries[1][2]) for i in range(1, n)]
    central = bytearray()
    for name, data, offset in entries:
        raw = name.encode()
        fields = (0, 0, 0, 0, zlib.crc32(data), len(data), len(data), len(raw))
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, *fields, 0, 0, 0, 0, 0, offset)
        central += raw
    m = len(entries)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, m, m, len(central), len(out), 0)
    with open(path, "wb") as f:
        f.write(out)


def _npy_header(descr: str, shape: tuple) -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


_MEASURE = r"""
import json, resource, sys, tracemalloc
from pairviz_jax.checkpoints._io import read_arrays
import numpy as np

def vm_bytes():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmSize")) * 1024

soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + int(sys.argv[1]) * 2**20, hard))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
for name, path in json.loads(sys.argv[2]).items():
    tracemalloc.reset_peak()
    try:
        _, arrays = read_arrays(path)
        out = {"ok": True, "keys": len(arrays)}
        values = list(arrays.values())
        out["one_buffer"] = all(np.shares_memory(values[0], v) for v in values)
        del arrays, values
    except BaseException as e:
        out = {"ok": False, "type": type(e).__name__, "msg": str(e)}
    out["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20  # NumPy buffers included
    out["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    out["file_mb"] = __import__("os").path.getsize(path) / 2**20
    print(json.dumps({name: out}), flush=True)
"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """``{attack: result}`` of reading every memory attack in one capped subprocess."""
    files = _build_memory_attacks(tmp_path_factory.mktemp("hostile"))
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-c", _MEASURE, str(HEADROOM_MB), json.dumps(files)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300).stdout
    except subprocess.TimeoutExpired as e:  # a loader that walks 2**40 paths
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    results = {}
    for line in out.splitlines():
        results.update(json.loads(line))
    print(json.dumps(results, indent=1))  # shown with -s or on failure
    return results, files


def _refused(measured, attack: str, pattern: str) -> str:
    results, files = measured
    r = results.get(attack)
    assert r is not None, f"{attack}: the loader never finished"
    assert not r["ok"] and r["type"] == "CheckpointError", r
    assert r["msg"].startswith(files[attack]) and "\n" not in r["msg"], r["msg"]
    assert pattern in r["msg"], r["msg"]
    assert _small(r), r
    return r["msg"]


def test_a_stride_0_view_is_refused_not_materialised(measured):
    _refused(measured, "stride0", "overlaps itself")


def test_a_self_overlapping_view_is_refused(measured):
    _refused(measured, "overlap", "overlaps itself")


def test_a_thousand_views_of_one_storage_cost_one_storage(measured):
    r = measured[0]["shared"]
    assert r["ok"] and r["keys"] == 1000 and r["one_buffer"], r
    # 1 MB of float16 -> 2 MB of float32, once: far below 1,000 copies (2 GB).
    assert _small(r), r


@pytest.mark.parametrize(
    "attack,pattern",
    [
        ("bomb_storage", "bytes for 1 elements"),
        ("bomb_honest", "zip bomb"),
        ("bomb_pickle", "bytes of pickle"),
        ("bomb_byteorder", "not a byte order"),
        ("npz_bomb", "zip bomb"),
    ],
)
def test_a_member_that_inflates_to_gigabytes_is_refused_before_inflating(measured, attack, pattern):
    _refused(measured, attack, pattern)


def test_a_member_whose_stream_outruns_its_declared_size_is_read_no_further(measured):
    r = measured[0]["lying_size"]
    assert r["ok"] and r["keys"] == 1 and _small(r), r


def test_zip_entries_sharing_one_body_are_refused(measured):
    _refused(measured, "zip_overlap", "overlap")


def test_a_huge_memo_index_costs_one_entry(measured):
    r = measured[0]["memo"]
    assert r["ok"] and r["keys"] == 1, r
    assert _small(r), r


def test_an_npy_header_promising_more_than_its_member_is_refused(measured):
    _refused(measured, "npz_header", "promises")


def test_safetensors_tensors_sharing_bytes_are_refused(measured):
    _refused(measured, "st_overlap", "without overlap")


def test_a_dict_reached_twice_is_refused_not_walked_2_to_the_40_times(measured):
    _refused(measured, "dag", "reached twice")


# ------------------------------------------------------ damage: one line, no traceback


def _damaged(d) -> dict:
    """``{attack: (path, expected words)}``: small files, each one kind of damage."""
    cases = {}
    for name, member, words in [
        ("crc", {"crc": 12345}, "CRC"),
        ("encrypted", {"flags": 1}, "encrypted"),
        ("compression", {"method": 99}, "compression method 99"),
    ]:
        _one_tensor(d / f"{name}.pth", **member)
        cases[name] = (d / f"{name}.pth", words)
    _one_tensor(d / "magic.pth")
    blob = bytearray((d / "magic.pth").read_bytes())
    at = blob.index(b"PK\x03\x04", 4)  # data.pkl's local header
    blob[at : at + 4] = b"PK\x09\x09"
    (d / "magic.pth").write_bytes(bytes(blob))
    cases["magic"] = (d / "magic.pth", "magic")
    _one_tensor(d / "short.pth")
    whole = (d / "short.pth").read_bytes()
    (d / "short.pth").write_bytes(whole[: len(whole) // 2])
    cases["truncated"] = (d / "short.pth", "zip")
    deep = b"".join(b"}" + _u("a") for _ in range(5000)) + _dict([("w", _tensor())])
    _torch(d / "deep.pth", _pkl(deep + b"s" * 5000), {"0": bytes(4)})
    cases["deep"] = (d / "deep.pth", "nested over 64 deep")
    loop = b"}q\x00(" + _u("a") + b"h\x00" + _u("w") + _tensor() + b"u"
    _torch(d / "loop.pth", _pkl(loop), {"0": bytes(4)})
    cases["loop"] = (d / "loop.pth", "reached twice")
    # A shape whose int64 product wraps to 0 bytes.
    header = {"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}
    _safetensors(d / "wrap.safetensors", json.dumps(header).encode())
    cases["st_wrap"] = (d / "wrap.safetensors", "bytes for shape")
    _safetensors(d / "nest.safetensors", b"{" + b'"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    cases["st_nest"] = (d / "nest.safetensors", "corrupt safetensors header")
    big = {"name": "a/data.pkl", "data": b"\x80\x02" + b"N0" * ((_torch_zip.MAX_PICKLE >> 1) + 1)}
    _zip(d / "long.pth", [big])  # a valid but endless pickle: 32 MB of None, pop
    cases["long_pickle"] = (d / "long.pth", "bytes of pickle")
    _safetensors(d / "huge_header.safetensors", b"{" + b" " * (17 << 20) + b"}")
    cases["st_header"] = (d / "huge_header.safetensors", "safetensors header of")
    return cases


DAMAGE = [
    "long_pickle",
    "crc",
    "encrypted",
    "compression",
    "magic",
    "truncated",
    "deep",
    "loop",
    "st_wrap",
    "st_nest",
    "st_header",
]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    return _damaged(tmp_path_factory.mktemp("damaged"))


@pytest.mark.parametrize("attack", DAMAGE)
def test_damaged_files_are_one_checkpoint_error_line(damaged, attack):
    path, words = damaged[attack]
    with pytest.raises(CheckpointError) as e:
        read_arrays(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg and words in msg, msg


@pytest.mark.parametrize("attack", DAMAGE)
def test_load_weights_turns_each_into_its_one_line_error(damaged, attack):
    path, _ = damaged[attack]
    with pytest.raises(runs.InputError) as e:
        runs.load_weights(str(path))
    msg = str(e.value)
    assert msg.startswith(f"--weights {path}:") and "\n" not in msg, msg


def test_the_cli_prints_one_line_and_exits_1(damaged, tmp_path, capsys):
    import visualize

    path, _ = damaged["encrypted"]
    rc = visualize.main(
        ["pair", str(path), str(path), "--weights", str(path), "--out", str(tmp_path / "x.png")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and str(path) in err, err


# -------------------------------------------------------------- shard index confinement


def _hf_folder(d, shard_names) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text('{"model_type": "vit"}')
    index = {"weight_map": {f"w{i}": s for i, s in enumerate(shard_names)}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_shard_index_cannot_reach_outside_its_folder(tmp_path, how):
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"TOPSECRET-CONTENT" * 4)
    folder = tmp_path / "model"
    name = {"dotdot": "../secret.safetensors", "absolute": str(secret), "symlink": "s.safetensors"}[
        how
    ]
    _hf_folder(folder, [name])
    if how == "symlink":
        os.symlink(secret, folder / "s.safetensors")
    with pytest.raises(runs.InputError) as e:
        runs.load_weights(str(folder))
    msg = str(e.value)
    assert "refused" in msg and "outside" in msg or "no '..'" in msg, msg
    assert "TOPSECRET" not in msg and "\n" not in msg, msg


def test_the_hugging_face_cache_layout_still_reads(tmp_path):
    """``snapshots/<rev>/`` files are symlinks into ``blobs/``: that is not an escape."""
    from pairviz_jax.checkpoints._folder import weight_files

    repo = tmp_path / "models--x--y"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc").write_bytes(b"x")
    snap = repo / "snapshots" / "rev"
    _hf_folder(snap, ["model-1.safetensors"])
    os.symlink(repo / "blobs" / "abc", snap / "model-1.safetensors")
    assert weight_files(str(snap)) == [str(snap / "model-1.safetensors")]


def test_a_compressed_npz_with_one_sparse_array_among_real_weights_still_reads(tmp_path):
    """The zip-bomb bound is on the whole archive, not on one highly compressible member."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal(2**18).astype(np.float32),
        "mask": np.zeros(2**20, np.uint8),
    }
    np.savez_compressed(tmp_path / "sparse.npz", **weights)
    _, arrays = read_arrays(tmp_path / "sparse.npz")
    assert arrays.keys() == weights.keys()
    for k, v in weights.items():
        np.testing.assert_array_equal(arrays[k], v)
