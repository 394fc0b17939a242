"""Which pairs a job explains: a pairs file, every pair of a set, and image key lists.

* :class:`ArrayPairs`: int32 [P, 2] image indices (a memory map of ``pairs.npy``);
* :class:`AllPairs`: every unordered pair i < j of n images, computed from the record index;
* :func:`read_pairs_file`: a CSV/TSV of two image keys per line -> ``pairs.npy`` + keys;
* :func:`image_keys` / :func:`read_keys`: image keys from a file or ``DATASET:SPLIT[:N]``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator

import numpy as np

__all__ = ["AllPairs", "ArrayPairs", "image_keys", "read_keys", "read_pairs_file"]

_HEADERS = {("a", "b"), ("image_a", "image_b"), ("query", "gallery"), ("path_a", "path_b")}


def image_keys(spec: str) -> list[str]:
    """Image keys from a file (one per line) or ``DATASET:SPLIT[:N]`` (its first N records).

    Args:
      spec: a text file of keys, or e.g. ``demo:test`` / ``demo:test:1000``.

    Returns:
      The keys (``DATASET:SPLIT:INDEX`` for a dataset).
    """
    if os.path.isfile(spec):
        return read_keys(spec)
    parts = spec.split(":")
    from pairviz_jax.data import sources

    if 2 <= len(parts) <= 3 and parts[0] in sources.DATASETS:
        name, split = parts[0], parts[1]
        n = len(sources.open_source(name, split))
        if len(parts) == 3:
            if not parts[2].isdigit():
                raise ValueError(f"{spec}: expected DATASET:SPLIT:N with an integer N")
            n = min(n, int(parts[2]))
        return [f"{name}:{split}:{i}" for i in range(n)]
    raise ValueError(f"{spec}: neither a file of image keys nor DATASET:SPLIT[:N]")


def read_keys(path: str) -> list[str]:
    """Image keys from a text file, one per line (blank lines and ``#`` comments skipped)."""
    with open(path, encoding="utf-8") as f:
        keys = [line.strip() for line in f]
    return [k for k in keys if k and not k.startswith("#")]


# --------------------------------------------------------------------------- pairs


class ArrayPairs:
    """Pairs stored as an int32 [P, 2] array (usually a memory map of ``pairs.npy``)."""

    def __init__(self, pairs: np.ndarray):
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must be [P, 2], got {pairs.shape}")
        self.array = pairs

    def __len__(self) -> int:
        return self.array.shape[0]

    def take(self, start: int, stop: int) -> np.ndarray:
        """Image indices of records start..stop-1, int32 [n, 2]."""
        return np.asarray(self.array[start:stop], np.int32)


class AllPairs:
    """Every unordered pair i < j of n images, record r in row-major order.

    Row i holds (i, i+1) .. (i, n-1) and starts at record ``i * (2n - i - 1) / 2``.
    """

    def __init__(self, n: int):
        if n < 2:
            raise ValueError(f"all pairs need at least 2 images, got {n}")
        self.n = int(n)

    def __len__(self) -> int:
        return self.n * (self.n - 1) // 2

    def _offset(self, i: np.ndarray) -> np.ndarray:
        return i * (2 * self.n - i - 1) // 2

    def take(self, start: int, stop: int) -> np.ndarray:
        """Image indices of records start..stop-1 (clipped to the pairs), int32 [n, 2]."""
        return self.of(np.arange(max(start, 0), min(stop, len(self)), dtype=np.int64))

    def of(self, records: np.ndarray) -> np.ndarray:
        """Image indices of any records (int array [n], each in [0, P)), int32 [n, 2]."""
        r = np.asarray(records, np.int64).reshape(-1)
        if r.size and (r.min() < 0 or r.max() >= len(self)):
            raise IndexError(f"records must be in [0, {len(self)})")
        n = self.n
        disc = np.maximum((2.0 * n - 1) ** 2 - 8.0 * r, 0.0)
        i = np.floor(((2 * n - 1) - np.sqrt(disc)) / 2).astype(np.int64)
        i = np.clip(i, 0, n - 2)
        i -= self._offset(i) > r  # float rounding: at most one row off either way
        i += self._offset(i + 1) <= r
        j = r - self._offset(i) + i + 1
        return np.stack([i, j], axis=1).astype(np.int32)


def _split_row(row: list[str], where: str) -> tuple[str, str]:
    cells = [c.strip() for c in row]
    if len(cells) < 2 or not cells[0] or not cells[1]:
        raise ValueError(f"{where}: expected two image keys, got {row!r}")
    return cells[0], cells[1]


def read_pairs_file(path: str, pairs_out: str) -> list[str]:
    """Reads a CSV/TSV of image pairs into ``pairs_out`` (int32 [P, 2] .npy) and the keys.

    The delimiter is a tab if the first data line has one, else a comma. Lines
    starting with ``#`` are comments; a first row ``a,b`` / ``image_a,image_b`` /
    ``query,gallery`` / ``path_a,path_b`` is a header. Streams the file twice
    (count, then fill a memory map), so memory holds the distinct keys only.

    Args:
      path: the pairs file; columns beyond the second are ignored.
      pairs_out: where to write the pairs, in place (give a temporary name and rename
        or link it after: the job commits it with ``store.commit_file``).

    Returns:
      The distinct keys in order of first appearance; pairs index into it.
    """

    def rows() -> Iterator[tuple[int, list[str]]]:
        with open(path, encoding="utf-8", newline="") as f:
            first = None
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    first = line
                    break
            if first is None:
                return
            delimiter = "\t" if "\t" in first else ","
            f.seek(0)
            lines = (ln for ln in f if ln.strip() and not ln.lstrip().startswith("#"))
            for n, row in enumerate(csv.reader(lines, delimiter=delimiter)):
                if n == 0 and tuple(c.strip().lower() for c in row[:2]) in _HEADERS:
                    continue
                yield n, row

    count = sum(1 for _ in rows())
    if count == 0:
        raise ValueError(f"{path}: no pairs")
    out = np.lib.format.open_memmap(pairs_out, mode="w+", dtype=np.int32, shape=(count, 2))
    index: dict[str, int] = {}
    block = np.empty((65536, 2), np.int32)
    r = fill = 0
    for n, row in rows():
        a, b = _split_row(row, f"{path} data row {n + 1}")
        block[fill, 0] = index.setdefault(a, len(index))
        block[fill, 1] = index.setdefault(b, len(index))
        fill += 1
        if fill == len(block):
            out[r : r + fill] = block
            r, fill = r + fill, 0
    out[r : r + fill] = block[:fill]
    out.flush()
    del out
    return list(index)
