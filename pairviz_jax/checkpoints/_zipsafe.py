"""Zip members read no further than the archive really holds.

A zip's central directory is data the file's author chose: a member may declare any
size, be deflated a thousandfold (a "zip bomb"), share its bytes with other members
("overlapping" entries), be encrypted, use a compression the readers here do not know,
or fail its CRC. The loaders (``.npz``, ``torch.save`` archives) therefore read members
only through :func:`read_member`, which

- checks every declared size against the file before anything is allocated:
  :func:`open_archive` refuses members whose compressed bytes add up to more than the
  file (overlap) or lie beyond its end, and members that together inflate to more than
  ``MAX_RATIO`` times the file (weights deflate to about 0.9 of their size, a bomb to
  1/1000; one sparse array among real weights stays well within the bound);
  :func:`check_member` refuses encrypted members and compressions other than
  stored/deflate;
- checks the declared size against what the caller expects (``numel x itemsize`` of a
  storage, the header of a ``.npy``) before reading;
- streams the member in chunks into a buffer of the declared size, so a member whose
  deflate stream holds more or less than it declares is caught while streaming, never
  inflated whole first.

Every failure is an :class:`ArchiveError` (a ``ValueError``) naming the member; the
callers prefix the file's path.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

# An archive's members may inflate to at most this many times the file's size (real
# weights inflate ~1.1x; a zip bomb ~1000x), plus this much for tiny archives.
MAX_RATIO = 32
_SMALL = 1 << 16
_CHUNK = 1 << 20
# What a corrupt, truncated, encrypted or exotic member raises inside ``zipfile``.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    ValueError,
    OverflowError,
)


class ArchiveError(ValueError):
    """A zip archive or one of its members cannot be read safely."""


def open_archive(path: str) -> tuple[zipfile.ZipFile, int]:
    """Opens ``path`` as a zip and checks that its members fit in the file.

    Returns:
      ``(archive, size of the file in bytes)``; the caller closes the archive.

    Raises:
      ArchiveError: not a zip, a corrupt directory, or members that claim more
        compressed bytes than the file has (overlapping or out-of-file entries).
    """
    size = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        raise ArchiveError(f"not a readable zip archive ({_why(e)})") from None
    total = inflated = 0
    for info in archive.infolist():
        total += info.compress_size
        inflated += info.file_size
        if info.header_offset + info.compress_size > size or total > size:
            archive.close()
            raise ArchiveError(
                f"member {info.filename!r:.80} claims bytes beyond the file's {size} (its "
                "members overlap or lie past the end): not a sound zip archive"
            )
    if inflated > MAX_RATIO * size + _SMALL:
        archive.close()
        raise ArchiveError(
            f"its members would inflate {size} bytes to {inflated} (more than {MAX_RATIO}x: "
            "a zip bomb, not weights)"
        )
    return archive, size


def check_member(info: zipfile.ZipInfo) -> None:
    """Refuses a member that is encrypted, exotically compressed or a deflate bomb."""
    name = f"member {info.filename!r:.80}"
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{name} is encrypted; checkpoints are never encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise ArchiveError(
                f"{name} is stored uncompressed but declares {info.file_size} bytes in "
                f"{info.compress_size}"
            )
    elif info.compress_type != zipfile.ZIP_DEFLATED:
        raise ArchiveError(
            f"{name} uses zip compression method {info.compress_type}; only stored and "
            "deflate are read"
        )


def read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, expected: int | None = None
) -> np.ndarray:
    """The bytes of one member (uint8 array), read no further than they are declared.

    Args:
      archive, info: the open archive and the member's entry.
      expected: the size the caller's metadata implies, checked against the member's
        declared size before anything is read; None: the declared size.

    Raises:
      ArchiveError: a refused member (:func:`check_member`), a size that is not the
        expected one, or a stream that ends early, runs long or fails its CRC.
    """
    check_member(info)
    name = f"member {info.filename!r:.80}"
    if expected is not None and info.file_size != expected:
        raise ArchiveError(f"{name} holds {info.file_size} bytes where {expected} are expected")
    out = np.empty(info.file_size, np.uint8)
    view = memoryview(out)
    try:
        with archive.open(info) as f:
            pos = 0
            while pos < info.file_size:
                n = f.readinto(view[pos : pos + _CHUNK])
                if not n:
                    raise ArchiveError(
                        f"{name} ends after {pos} of its {info.file_size} declared bytes"
                    )
                pos += n
            if f.read(1):
                raise ArchiveError(f"{name} runs past its {info.file_size} declared bytes")
    except ArchiveError:
        raise
    except ZIP_ERRORS as e:
        raise ArchiveError(f"{name}: {_why(e)}") from None
    return out


def open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """A checked member opened for streaming (the caller bounds its reads)."""
    check_member(info)
    try:
        return archive.open(info)
    except ZIP_ERRORS as e:
        raise ArchiveError(f"member {info.filename!r:.80}: {_why(e)}") from None


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__
