"""Checkpoint containers: recognise a file by its bytes and read it into flat arrays.

Three containers are read, each into ``{name: np.ndarray}``:

- ``npz``: a zip of ``.npy`` members (NumPy ``savez``), read with
  ``allow_pickle=False``;
- ``safetensors``: 8-byte little-endian header length, a JSON header, then a
  raw buffer; parsed here with NumPy alone (no ``torch``, no ``safetensors``);
- ``torch``: ``torch.save`` files. The zip archive of PyTorch >= 1.6 (``data.pkl``
  + raw storages) is read with NumPy alone by ``_torch_zip``, whose unpickler
  resolves only the tensor-rebuild globals and refuses every other one; the
  legacy pickle stream only through ``torch.load(..., weights_only=True)``
  (the optional ``torch`` extra), which refuses any pickle that would run code.

Nothing here ever unpickles with an unrestricted unpickler, and nothing is allocated
beyond what the file really holds: zip members go through ``_zipsafe`` (declared sizes
checked against the archive and the ``.npy`` header or ``numel x itemsize`` before
reading, reads bounded while streaming), safetensors headers and offsets are checked
against the file's size (offsets must tile the buffer, as the format requires) before
any tensor is read, and nested torch dicts are walked with a bound on depth and nodes.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from pairviz_jax.checkpoints import _torch_zip, _zipsafe

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"

# safetensors dtype names <-> NumPy dtypes.
_ST_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
# A header larger than this is not a real one (the format's own limit is 100 MB).
_ST_MAX_HEADER = 100_000_000
# ... and one larger than this is not read: parsed, a header takes ~17x its bytes (a
# 2,000-tensor model's header is ~200 KB).
_ST_READ_HEADER = 16 << 20
# A torch file's dicts nest at most this deep (a state dict: 2-4 levels).
_MAX_DEPTH = 64


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model."""


def sniff(path: str | os.PathLike) -> str:
    """Names the container of ``path`` from its first bytes: ``npz|safetensors|torch``.

    Raises:
      CheckpointError: when the file is missing, empty, truncated or not a
        checkpoint; the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path}: the file is empty, not a checkpoint")
    if head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        return _sniff_zip(path)
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        # A pickle stream (protocol 2-5): only the legacy torch.save format is accepted.
        return "torch"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < n <= _ST_MAX_HEADER:
            if 8 + n > size:
                raise CheckpointError(
                    f"{path}: truncated safetensors file (header of {n} bytes, file of {size})"
                )
            return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint: expected a .npz, .safetensors or torch.save file, "
        f"found first bytes {head[:8]!r}"
    )


def _sniff_zip(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except _zipsafe.ZIP_ERRORS as e:
        raise CheckpointError(
            f"{path}: truncated or corrupt zip archive ({_zipsafe._why(e)})"  # noqa: SLF001
        ) from None
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        raise CheckpointError(
            f"{path}: a TorchScript archive (e.g. OpenAI's CLIP .pt release), which holds code "
            "and is not read here; convert it once where torch is installed: save "
            "torch.jit.load(path, map_location='cpu').state_dict() with safetensors (an OpenAI "
            "CLIP state dict, read as such)"
        )
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    raise CheckpointError(
        f"{path}: a zip archive that is neither a .npz (only .npy members) nor a torch.save "
        f"file (a data.pkl member); members: {names[:5]}"
    )


def read_arrays(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """Reads every array of a checkpoint file.

    Args:
      path: a ``.npz``, ``.safetensors`` or ``torch.save`` file (any name; the
        format comes from the bytes).

    Returns:
      ``(container, arrays)``: the container name and ``{key: array}`` with
      the file's own keys (nested torch dicts joined with ``.``).

    Raises:
      CheckpointError: for a missing, truncated, corrupt or foreign file.
      ImportError: for a torch file when ``torch`` is not installed.
    """
    path = os.fspath(path)
    container = sniff(path)
    reader = {"npz": _read_npz, "safetensors": _read_safetensors, "torch": _read_torch}
    return container, reader[container](path)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """A ``.npz``: each ``.npy`` header checked against its member's size, then read."""
    try:
        archive, _ = _zipsafe.open_archive(path)
    except _zipsafe.ArchiveError as e:
        raise CheckpointError(f"{path}: truncated or corrupt .npz ({e})") from None
    out = {}
    with archive:
        for info in archive.infolist():
            try:
                out[info.filename[: -len(".npy")]] = _npy_member(archive, info)
            except _zipsafe.ArchiveError as e:
                raise CheckpointError(f"{path}: unreadable .npz member ({e})") from None
    return out


def _npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member; its header's shape x itemsize must be the member's size."""
    name = f"member {info.filename!r:.80}"
    with _zipsafe.open_member(archive, info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f".npy format version {version} is not read")
            shape, fortran, dtype = read_header(f)
            start = f.tell()
        except _zipsafe.ZIP_ERRORS as e:
            raise _zipsafe.ArchiveError(f"{name}: {_zipsafe._why(e)}") from None  # noqa: SLF001
    if dtype.hasobject:  # NumPy would need a pickle: never run one
        raise _zipsafe.ArchiveError(f"{name} holds Python objects (a pickle), not numbers")
    count = 1
    for n in shape:
        count *= int(n)
    if info.file_size != start + count * dtype.itemsize:
        raise _zipsafe.ArchiveError(
            f"{name}: its header promises {shape} {dtype} ({count * dtype.itemsize} bytes) "
            f"but the member holds {info.file_size - start}"
        )
    raw = _zipsafe.read_member(archive, info)[start:]
    try:
        values = raw.view(dtype)
        return values.reshape(shape[::-1]).T if fortran else values.reshape(shape)
    except (ValueError, TypeError) as e:
        raise _zipsafe.ArchiveError(f"{name}: {_zipsafe._why(e)}") from None  # noqa: SLF001


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """A safetensors file, each tensor read at its offsets once they are all checked."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if not 0 < n <= min(_ST_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{path}: truncated safetensors file (header of {n} bytes, file of {size})"
            )
        if n > _ST_READ_HEADER:
            raise CheckpointError(
                f"{path}: a safetensors header of {n} bytes (at most {_ST_READ_HEADER} are "
                "read; a real model's takes ~100 bytes per tensor)"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(
                f"{path}: corrupt safetensors header ({_zipsafe._why(e)})"  # noqa: SLF001
            ) from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        entries = {k: _st_entry(path, k, info) for k, info in header.items() if k != "__metadata__"}
        _st_check_offsets(path, entries, size - 8 - n)
        out = {}
        for key, (dtype, shape, start, end) in entries.items():
            f.seek(8 + n + start)
            buf = np.empty(end - start, np.uint8)
            if f.readinto(memoryview(buf)) != end - start:
                raise CheckpointError(f"{path}: truncated safetensors file at {key!r:.80}")
            values = buf.view(dtype)
            if sys.byteorder == "big" and values.itemsize > 1:  # the format is little-endian
                values.byteswap(inplace=True)
            out[key] = values.reshape(shape)
    return out


def _st_entry(path: str, key: str, info: Any) -> tuple[Any, tuple[int, ...], int, int]:
    """(dtype, shape, start, end) of one header entry, its size checked against its shape."""
    try:
        dtype = _ST_DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        start, end = info["data_offsets"]
        if not all(isinstance(v, int) and v >= 0 for v in (*shape, start, end)):
            raise ValueError("shape and data_offsets must be non-negative integers")
        if len(shape) > 32:
            raise ValueError(f"{len(shape)} dimensions")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: corrupt safetensors entry {key!r:.80} ({_zipsafe._why(e)})"  # noqa: SLF001
        ) from None
    count = 1
    for d in shape:
        count *= d
    if end - start != count * np.dtype(dtype).itemsize:
        raise CheckpointError(
            f"{path}: corrupt safetensors entry {key!r:.80}: {end - start} bytes for shape "
            f"{str(shape)[:200]}"
        )
    return dtype, shape, start, end


def _st_check_offsets(path: str, entries: dict, buffer_size: int) -> None:
    """The tensors tile the data buffer (no overlap, no gap), which must hold them."""
    pos = 0
    for key, (_, _, start, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if end > buffer_size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: {key!r:.80} needs bytes up to {end} of "
                f"the data buffer, which has {buffer_size}"
            )
        if start != pos:
            raise CheckpointError(
                f"{path}: corrupt safetensors offsets: {key!r:.80} starts at byte {start}, "
                f"expected {pos} (tensors must follow one another without overlap)"
            )
        pos = end


def _read_torch(path: str) -> dict[str, np.ndarray]:
    if zipfile.is_zipfile(path):  # torch.save since PyTorch 1.6: no torch needed
        try:
            obj = _torch_zip.read(path, as_float32=True)
        except _torch_zip.TorchZipError as e:
            raise CheckpointError(
                f"{path}: refused or unreadable torch.save archive ({e})"
            ) from None
    else:
        obj = _read_legacy_torch(path)
    try:
        flat = _flatten_torch(path, obj)
    except RecursionError:  # a key whose str() nests too deep
        raise CheckpointError(f"{path}: the torch file's keys nest too deep") from None
    if not flat:
        raise CheckpointError(f"{path}: the torch file holds no tensors")
    return flat


def _read_legacy_torch(path: str) -> Any:
    """The pre-1.6 pickle stream, through ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path} looks like a legacy PyTorch (pickle) checkpoint (saved before PyTorch "
            "1.6); it is read only with torch.load(weights_only=True), which needs PyTorch: on "
            "a machine without a GPU install PyTorch's CPU-only build first (PyTorch's install "
            "page, Compute Platform CPU), then pip install 'pairviz-jax[torch]' (alone, the "
            "extra pulls the CUDA build and ~20 GPU packages); or convert the file once "
            "elsewhere with pairviz_jax.checkpoints.convert_file"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused or failed to read the file "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    return _numpy_tree(obj, torch)


def _numpy_tree(obj: Any, torch: Any) -> Any:
    """torch tensors in a loaded tree -> NumPy arrays (floating ones as float32)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return (t.float() if t.is_floating_point() else t).numpy().copy()
    if isinstance(obj, Mapping):
        return {k: _numpy_tree(v, torch) for k, v in obj.items()}
    return obj


def _flatten_torch(path: str, obj: Any) -> dict[str, np.ndarray]:
    """``{"a.b.c": array}`` of a loaded tree; floating arrays as float32.

    Walked without recursion, at most ``_MAX_DEPTH`` dicts deep and visiting each dict
    once (a pickle can make a dict hold itself, or a chain of dicts that each hold the
    next twice: 2**40 paths from a few hundred bytes).

    Raises:
      CheckpointError: a dict nested too deep or reached twice.
    """
    out: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    pending: list[tuple[str, Any, int]] = [("", obj, 0)]
    while pending:
        prefix, node, depth = pending.pop()
        if isinstance(node, np.ndarray):
            floating = np.issubdtype(node.dtype, np.floating) or node.dtype == ml_dtypes.bfloat16
            out[prefix] = node.astype(np.float32, copy=False) if floating else node
        elif isinstance(node, Mapping):
            if depth >= _MAX_DEPTH or id(node) in seen:
                why = f"nested over {_MAX_DEPTH} deep" if depth >= _MAX_DEPTH else "reached twice"
                raise CheckpointError(
                    f"{path}: a dict of the torch file is {why} (at {prefix!r:.80})"
                )
            seen.add(id(node))
            items = [(f"{prefix}.{k}" if prefix else str(k), v, depth + 1) for k, v in node.items()]
            pending.extend(reversed(items))
        # Other entries (epoch counters, optimiser settings, strings) carry no weights.
    return out


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes ``{key: array}`` as an uncompressed ``.npz`` (keys may contain ``/``)."""
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def write_safetensors(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes ``{key: array}`` in the safetensors format (C order, little-endian)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        if a.dtype not in _ST_NAMES:
            raise ValueError(f"safetensors cannot store {key!r} of dtype {a.dtype}")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {
            "dtype": _ST_NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the format pads the header with spaces to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for raw in chunks:
            f.write(raw)
