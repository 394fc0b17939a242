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

Nothing here ever unpickles with an unrestricted unpickler.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from pairviz_jax.checkpoints import _torch_zip

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
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({e})") from None
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
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except ValueError as e:
        # NumPy refuses object arrays without allow_pickle: never run a pickle.
        raise CheckpointError(f"{path}: unreadable .npz member ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt .npz ({e})") from None


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    buf = memoryview(data)[8 + n :]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        out[key] = _st_tensor(path, key, info, buf)
    return out


def _st_tensor(path: str, key: str, info: Any, buf: memoryview) -> np.ndarray:
    try:
        dtype = _ST_DTYPES[info["dtype"]]
        shape = tuple(int(d) for d in info["shape"])
        start, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors entry {key!r} ({e!r})") from None
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if end > len(buf):
        raise CheckpointError(
            f"{path}: truncated safetensors file: {key!r} needs bytes up to {end} of the "
            f"data buffer, which has {len(buf)}"
        )
    if end - start != nbytes or start < 0:
        raise CheckpointError(
            f"{path}: corrupt safetensors entry {key!r}: {end - start} bytes for shape {shape}"
        )
    return np.frombuffer(buf[start:end], dtype=dtype).reshape(shape).copy()


def _read_torch(path: str) -> dict[str, np.ndarray]:
    if zipfile.is_zipfile(path):  # torch.save since PyTorch 1.6: no torch needed
        try:
            obj = _torch_zip.read(path)
        except _torch_zip.TorchZipError as e:
            raise CheckpointError(
                f"{path}: refused or unreadable torch.save archive ({e})"
            ) from None
    else:
        obj = _read_legacy_torch(path)
    flat: dict[str, np.ndarray] = {}
    _flatten_torch(obj, "", flat)
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


def _flatten_torch(obj: Any, prefix: str, out: dict) -> None:
    if isinstance(obj, np.ndarray):
        floating = np.issubdtype(obj.dtype, np.floating) or obj.dtype == ml_dtypes.bfloat16
        out[prefix] = obj.astype(np.float32) if floating else obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten_torch(v, f"{prefix}.{k}" if prefix else str(k), out)
    # Other entries (epoch counters, optimiser settings, strings) carry no weights.


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
