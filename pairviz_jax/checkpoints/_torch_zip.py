"""PyTorch's zip checkpoints read with NumPy alone, and without running any code.

``torch.save`` (PyTorch >= 1.6) writes a zip archive ``<name>/data.pkl`` +
``<name>/data/<key>`` (one raw buffer per storage) + ``<name>/byteorder``. The pickle
refers to each storage by a persistent id ``("storage", <dtype>Storage, key, location,
numel)`` and rebuilds tensors with ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)``.

``read`` unpickles ``data.pkl`` with an unpickler that resolves exactly those globals
(and ``collections.OrderedDict``) to NumPy constructions and refuses every other one, as
``torch.load(weights_only=True)`` refuses what is not on its allow-list: a pickle that
would call anything else stops with ``TorchZipError`` naming the global, before it runs.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
import zipfile
from typing import Any

import ml_dtypes
import numpy as np


class TorchZipError(ValueError):
    """The archive is not a readable torch checkpoint, or its pickle asks for code."""


# torch.<X>Storage -> the element dtype of its buffer.
STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *_unused) -> np.ndarray:
    """``_rebuild_tensor_v2``: a strided view of the storage (in elements), copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise TorchZipError(f"tensor of size {size} has stride {stride}")
    if any(s == 0 for s in size):
        return np.zeros(size, storage.dtype)
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if int(offset) < 0 or last >= storage.size or min(stride, default=0) < 0:
        raise TorchZipError(
            f"tensor of size {size}, stride {stride} at offset {offset} lies outside its "
            f"storage of {storage.size} elements"
        )
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[int(offset) :], shape=size, strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, *_unused) -> np.ndarray:
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, big_endian: bool):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.big_endian = archive, prefix, big_endian
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        raise TorchZipError(f"the pickle asks for {module}.{name}, which is not a tensor part")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchZipError(f"unknown persistent id {pid!r:.80}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType):
            raise TorchZipError(f"storage {key} of unknown type {kind!r:.80}")
        if key not in self.storages:
            member = f"{self.prefix}data/{key}"
            try:
                raw = self.archive.read(member)
            except KeyError:
                raise TorchZipError(f"missing storage member {member}") from None
            dtype = np.dtype(kind.dtype)
            if len(raw) != numel * dtype.itemsize:
                raise TorchZipError(
                    f"storage {member}: {len(raw)} bytes for {numel} elements of {kind.name}"
                )
            values = np.frombuffer(raw, dtype)
            if self.big_endian != (sys.byteorder == "big") and dtype.itemsize > 1:
                values = values.byteswap()
            self.storages[key] = values
        return self.storages[key]


def is_torch_zip(names: list[str]) -> bool:
    """Whether the zip member ``names`` are a ``torch.save`` archive (``*/data.pkl``)."""
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def read(path: str) -> Any:
    """Unpickles a ``torch.save`` zip archive: tensors become NumPy arrays, dicts stay dicts.

    Raises:
      TorchZipError: not such an archive, a corrupt member, or a pickle that would call
        anything but a tensor rebuild.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise TorchZipError(f"not a zip archive ({e})") from None
    with archive:
        pkl = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise TorchZipError(f"expected one data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        big = order in archive.namelist() and archive.read(order).strip() == b"big"
        unpickler = _Unpickler(archive.read(pkl[0]), archive, prefix, big)
        try:
            return unpickler.load()
        except TorchZipError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt pickle raises many types
            raise TorchZipError(f"corrupt data.pkl ({type(e).__name__}: {e})") from None
