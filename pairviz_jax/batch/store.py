"""The output directory of a batch job: atomic files, shard commits, and reading results.

Every file is written under a temporary name (``<name>.tmp<pid>``) and renamed into place,
a shard's marker ``shards/<k>.json`` last, so a job killed at any moment leaves only whole
shards; :func:`clean_stale` removes the temporary files a killed job left (a pairs file
half parsed: 32 MB at 4 x 10^6 pairs) when the next run starts. :class:`BatchResults`
reads a job's output with memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from pairviz_jax.batch.pairs import AllPairs, ArrayPairs, read_keys

__all__ = [
    "BatchResults",
    "Layout",
    "atomic_save",
    "atomic_text",
    "clean_stale",
    "commit_shard",
    "params_fingerprint",
    "read_json",
    "sha256_file",
    "shard_name",
]

# A file under a temporary name, or one process's part of unreadable.txt.
_TMP = re.compile(r"(\.tmp\d+(\.npy|\.npz)?|\.txt\.p\d+)$")


def atomic_save(path: str, array: np.ndarray) -> None:
    """Writes ``array`` to ``path`` (.npy) under a temporary name, then renames it."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
    os.replace(tmp, path)


def atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def params_fingerprint(variables) -> str:
    """A sha256 over every parameter's name, shape, dtype and bytes (resume checks)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        x = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{x.shape}{x.dtype}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def clean_stale(root: str) -> list[str]:
    """Removes the temporary files a killed job left under ``root`` (not its sub-folders'
    sub-folders: the job writes only to ``root``, ``shards/`` and ``embed/``).

    Returns:
      The paths removed.
    """
    removed = []
    for d in (root, os.path.join(root, "shards"), os.path.join(root, "embed")):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if _TMP.search(name) and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


def shard_name(k: int) -> str:
    return f"{k:06d}"


class Layout:
    def __init__(self, out_dir: str):
        self.root = os.path.abspath(out_dir)
        self.shards = os.path.join(self.root, "shards")
        self.embed = os.path.join(self.root, "embed")
        self.png = os.path.join(self.root, "png")
        self.job = os.path.join(self.root, "job.json")
        self.images = os.path.join(self.root, "images.txt")
        self.pairs = os.path.join(self.root, "pairs.npy")
        self.manifest = os.path.join(self.root, "manifest.json")
        self.unreadable = os.path.join(self.root, "unreadable.txt")

    def shard(self, k: int, what: str) -> str:
        return os.path.join(self.shards, f"{shard_name(k)}.{what}")

    def done(self, k: int) -> bool:
        return os.path.exists(self.shard(k, "json"))


def commit_shard(
    layout: Layout, s: int, lo: int, hi: int, buf: dict, ok: np.ndarray, png: Any = None
) -> tuple[int, int]:
    """Writes shard s (records lo..hi-1) file by file, then its marker.

    Args:
      layout: the output directory.
      s: the shard index.
      lo, hi: its records.
      buf: ``pairs`` [n, 2], ``maps_a``, ``maps_b`` [n, gh, gw] float16, ``score`` [n].
      ok: bool [I], readable images; pairs with an unreadable one are left out.
      png: ``png(record, pair_index_in_shard)`` draws a figure, or None.

    Returns:
      ``(written, skipped)`` pairs.
    """
    keep = ok[buf["pairs"][:, 0]] & ok[buf["pairs"][:, 1]]
    records = np.arange(lo, hi, dtype=np.int64)[keep]
    atomic_save(layout.shard(s, "record.npy"), records)
    for name in ("maps_a", "maps_b", "score"):
        atomic_save(layout.shard(s, f"{name}.npy"), buf[name][keep])
    if png is not None:
        for j in np.flatnonzero(keep):
            png(lo + int(j), int(j))
    marker = {
        "shard": s,
        "start": lo,
        "stop": hi,
        "written": int(keep.sum()),
        "skipped": int((~keep).sum()),
        "process": jax.process_index(),
    }
    atomic_text(layout.shard(s, "json"), json.dumps(marker))
    return marker["written"], marker["skipped"]


class BatchResults:
    """Reads a batch job's output with memory maps (nothing is loaded until indexed).

    Args:
      out_dir: the job's output directory.
      partial: also open an unfinished job (its committed shards only).

    Attributes:
      images: the distinct image keys.
      num_pairs: records in the job (written or skipped).
      shards: per committed shard, a dict of memory-mapped arrays ``record``,
        ``maps_a``, ``maps_b``, ``score``.
    """

    def __init__(self, out_dir: str, *, partial: bool = False):
        self.layout = Layout(out_dir)
        job = read_json(self.layout.job)
        if job is None:
            raise FileNotFoundError(f"{out_dir} holds no batch job (no job.json)")
        self.fingerprint = job["fingerprint"]
        manifest = read_json(self.layout.manifest)
        if manifest is None and not partial:
            raise ValueError(f"{out_dir} is not finished (no manifest.json); pass partial=True")
        self.images = read_keys(self.layout.images)
        if self.fingerprint["mode"] == "all":
            self._pairs: ArrayPairs | AllPairs = AllPairs(len(self.images))
        else:
            self._pairs = ArrayPairs(np.load(self.layout.pairs, mmap_mode="r"))
        self.num_pairs = len(self._pairs)
        size = self.fingerprint["shard_size"]
        names = sorted(int(f[:-5]) for f in os.listdir(self.layout.shards) if f.endswith(".json"))
        self.shards = []
        for s in names:
            shard = {
                what: np.load(self.layout.shard(s, f"{what}.npy"), mmap_mode="r")
                for what in ("record", "maps_a", "maps_b", "score")
            }
            shard["start"] = s * size
            self.shards.append(shard)
        self.shard_size = size
        self._by_start = {sh["start"]: sh for sh in self.shards}

    def pairs(self, records) -> np.ndarray:
        """Image indices [n, 2] of records (any int array)."""
        records = np.asarray(records, np.int64).reshape(-1)
        if isinstance(self._pairs, AllPairs):
            return self._pairs.of(records)
        return np.asarray(self._pairs.array[records])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.shards)

    def get(self, record: int) -> dict[str, Any] | None:
        """One record: keys ``a``, ``b`` (image keys), ``maps_a``, ``maps_b``, ``score``;
        None if it was skipped (an unreadable image) or is not committed yet."""
        shard = self._by_start.get(record // self.shard_size * self.shard_size)
        if shard is None:
            return None
        j = int(np.searchsorted(shard["record"], record))
        if j >= len(shard["record"]) or shard["record"][j] != record:
            return None
        a, b = self.pairs([record])[0]
        return {
            "a": self.images[a],
            "b": self.images[b],
            "maps_a": np.asarray(shard["maps_a"][j]),
            "maps_b": np.asarray(shard["maps_b"][j]),
            "score": float(shard["score"][j]),
        }

    def written(self) -> int:
        return sum(len(sh["record"]) for sh in self.shards)
