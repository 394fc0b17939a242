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

Nothing the archive declares is trusted further than the file holds: members are read
through ``_zipsafe`` (sizes checked against ``numel x itemsize`` and the zip directory
before a byte is inflated, reads bounded while streaming); the pickle runs in the
pure-Python unpickler (its memo is a dict, so ``LONG_BINPUT 2**28`` costs one entry, not
a 2**28-slot table) with ``BUILD`` limited to dict state; each storage is read once and
every tensor is a view of it (1,000 views of one storage cost one storage); a view that
overlaps itself (stride 0, or strides that revisit elements) is refused, as it would
materialise more than the storage holds.
"""

from __future__ import annotations

import collections
import io
import pickle
import reprlib
import sys
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from pairviz_jax.checkpoints import _zipsafe


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


_REPR = reprlib.Repr()  # bounded repr of what a hostile pickle hands over
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
# At most this many dimensions (NumPy's own limit is 64).
_MAX_NDIM = 32
# A state dict's data.pkl takes ~150 bytes per tensor (a ViT-g: ~100 KB); the pure-Python
# unpickler reads ~3 MB/s, so a larger one would only cost time.
MAX_PICKLE = 32 << 20


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple | list) or len(values) > _MAX_NDIM:
        raise TorchZipError(f"tensor {what} {_REPR.repr(values)} is not a tuple of <= 32 ints")
    if not all(isinstance(v, int) for v in values):
        raise TorchZipError(f"tensor {what} {_REPR.repr(values)} is not a tuple of ints")
    return tuple(int(v) for v in values)


def _overlaps(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether a strided view may visit one element twice (stride 0 included).

    Sufficient test: with the dimensions of size > 1 sorted by stride, each stride must
    step past everything the smaller ones reach (true of every transposed, permuted or
    sliced tensor that ``torch.save`` writes for a parameter).
    """
    reach = 0  # elements spanned by the dimensions checked so far, minus one
    for n, s in sorted((p for p in zip(size, stride, strict=True) if p[0] > 1), key=lambda p: p[1]):
        if s <= reach:
            return True
        reach += (n - 1) * s
    return False


def _rebuild_tensor(storage, offset, size, stride, *_unused) -> np.ndarray:
    """``_rebuild_tensor_v2``: a strided view of the storage (in elements), not a copy.

    Raises:
      TorchZipError: a view outside its storage, or one that overlaps itself.
    """
    if not isinstance(storage, np.ndarray):
        raise TorchZipError(f"a tensor rebuilt from {_REPR.repr(storage)}, not a storage")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if not isinstance(offset, int):
        raise TorchZipError(f"tensor offset {_REPR.repr(offset)} is not an int")
    if len(size) != len(stride) or min(size, default=0) < 0:
        raise TorchZipError(f"tensor of size {size} has stride {stride}")
    if any(s == 0 for s in size):
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= storage.size or min(stride, default=0) < 0:
        raise TorchZipError(
            f"tensor of size {size}, stride {stride} at offset {offset} lies outside its "
            f"storage of {storage.size} elements"
        )
    if _overlaps(size, stride):
        raise TorchZipError(
            f"tensor of size {size} with stride {stride} overlaps itself (an expanded or "
            "stride-0 view): save it with .contiguous() (.clone()) first"
        )
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride)
    )


def _rebuild_parameter(data, *_unused) -> np.ndarray:
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


def _load_build(self) -> None:
    """``BUILD`` only on dicts, whose state (a state dict's ``_metadata``) is dropped."""
    self.stack.pop()
    if not isinstance(self.stack[-1], dict):
        raise TorchZipError(f"the pickle sets the state of {_REPR.repr(self.stack[-1])}")


def _refuse_bytearray(self) -> None:
    raise TorchZipError("the pickle holds a BYTEARRAY8, which torch.save never writes")


class _Unpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python one: a dict memo
    """Resolves only tensor parts; storages come from the archive, each read once."""

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001
    dispatch[pickle.BUILD[0]] = _load_build
    # bytearray(n) of the declared n before reading: never written by torch.save.
    dispatch[pickle.BYTEARRAY8[0]] = _refuse_bytearray

    def __init__(
        self,
        data: bytes,
        archive: zipfile.ZipFile,
        prefix: str,
        big_endian: bool,
        as_float32: bool,
    ):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.big_endian = archive, prefix, big_endian
        self.as_float32 = as_float32
        self.storages: dict[str, tuple[str, int, np.ndarray]] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        raise TorchZipError(
            f"the pickle asks for {module:.80}.{name:.80}, which is not a tensor part"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchZipError(f"unknown persistent id {_REPR.repr(pid)}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType):
            raise TorchZipError(f"storage {_REPR.repr(key)} of unknown type {_REPR.repr(kind)}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise TorchZipError(f"storage key {_REPR.repr(key)} of {_REPR.repr(numel)} elements")
        if key in self.storages:  # one storage, many tensors: read once
            name, count, values = self.storages[key]
            if (name, count) != (kind.name, numel):
                raise TorchZipError(f"storage {key} is both {name}[{count}] and {kind}[{numel}]")
            return values
        self.storages[key] = (kind.name, numel, self._read_storage(kind, key, numel))
        return self.storages[key][2]

    def _read_storage(self, kind: _StorageType, key: str, numel: int) -> np.ndarray:
        member = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(member)
        except KeyError:
            raise TorchZipError(f"missing storage member {member:.120}") from None
        if info.file_size != numel * kind.dtype.itemsize:  # checked before reading
            raise TorchZipError(
                f"storage {member:.120}: {info.file_size} bytes for {numel} elements of {kind.name}"
            )
        try:
            raw = _zipsafe.read_member(self.archive, info)
        except _zipsafe.ArchiveError as e:
            raise TorchZipError(f"storage {kind}[{numel}]: {e}") from None
        values = raw.view(kind.dtype)
        if self.big_endian != (sys.byteorder == "big") and kind.dtype.itemsize > 1:
            values.byteswap(inplace=True)
        floating = np.issubdtype(kind.dtype, np.floating) or kind.dtype == ml_dtypes.bfloat16
        if self.as_float32 and floating and kind.dtype != np.float32:
            values = values.astype(np.float32)  # once per storage, not per view
        return values


def is_torch_zip(names: list[str]) -> bool:
    """Whether the zip member ``names`` are a ``torch.save`` archive (``*/data.pkl``)."""
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def read(path: str, *, as_float32: bool = False) -> Any:
    """Unpickles a ``torch.save`` zip archive: tensors become NumPy arrays, dicts stay dicts.

    Args:
      path: the archive.
      as_float32: cast floating storages to float32 (once per storage; the tensors stay
        views of it); False keeps each storage's dtype.

    Returns:
      The pickled object; each tensor a strided view of its storage (tensors that share
      a storage share memory, as torch's do).

    Raises:
      TorchZipError: not such an archive, a corrupt, encrypted, oversized or lying
        member, or a pickle that would call anything but a tensor rebuild.
    """
    try:
        archive, _ = _zipsafe.open_archive(path)
    except _zipsafe.ArchiveError as e:
        raise TorchZipError(str(e)) from None
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise TorchZipError(f"expected one data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        try:
            big = False
            if order in names:
                info = archive.getinfo(order)
                if info.file_size > 16:
                    raise TorchZipError(f"{order} holds {info.file_size} bytes, not a byte order")
                big = _zipsafe.read_member(archive, info).tobytes().strip() == b"big"
            info = archive.getinfo(pkl[0])
            if info.file_size > MAX_PICKLE:
                raise TorchZipError(
                    f"{pkl[0]} holds {info.file_size} bytes of pickle (at most {MAX_PICKLE} are "
                    "read; a state dict takes ~150 bytes per tensor)"
                )
            data = _zipsafe.read_member(archive, info).tobytes()
        except _zipsafe.ArchiveError as e:
            raise TorchZipError(str(e)) from None
        unpickler = _Unpickler(data, archive, prefix, big, as_float32)
        try:
            return unpickler.load()
        except TorchZipError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt pickle raises many types
            raise TorchZipError(f"corrupt data.pkl ({_zipsafe._why(e)})") from None  # noqa: SLF001
