"""The output directory of a batch job: committed-once files, shard directories, reading.

Every result is written under a temporary name carrying its writer's token and then
*committed once*: a file by an exclusive hard link (:func:`commit_file`: the first writer
wins, a second finds it there and drops its copy), a shard or an embedded chunk of images
as a whole directory by one ``rename`` (:func:`commit_dir`: a rename onto a directory
that exists fails). So a job killed at any moment leaves whole results only, two workers
that computed the same shard commit it once, and no writer ever removes another live
writer's temporary files (:func:`clean_stale` removes a dead worker's only).
:class:`BatchResults` reads a job's output with memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from pairviz_jax.batch.claims import is_exists_error
from pairviz_jax.batch.pairs import AllPairs, ArrayPairs, read_keys

__all__ = [
    "FORMAT",
    "BatchResults",
    "Layout",
    "clean_stale",
    "commit_dir",
    "commit_file",
    "params_fingerprint",
    "read_json",
    "save_tmp",
    "sha256_file",
    "shard_name",
    "text_tmp",
]

# The output format: 2 = one directory per shard (format 1, flat files per shard and no
# claims, is read by BatchResults but not resumed).
FORMAT = 2

# A writer's temporary file or directory: "<name>.tmp-<token>", ".<name>.<token>.tmp";
# format 1 left "<name>.tmp<pid>" and "unreadable.txt.p<k>".
_TMP = re.compile(
    r"\.tmp-(?P<a>[0-9a-f]{12})$|^\..*\.(?P<b>[0-9a-f]{12})\.tmp$|\.tmp\d+(\.npy)?$|\.txt\.p\d+$"
)


def tmp_name(path: str, token: str) -> str:
    return f"{path}.tmp-{token}"


def save_tmp(path: str, array: np.ndarray, token: str) -> str:
    """Writes ``array`` (.npy) to ``path``'s temporary name of writer ``token``."""
    tmp = tmp_name(path, token)
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
    return tmp


def text_tmp(path: str, text: str, token: str) -> str:
    tmp = tmp_name(path, token)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return tmp


def commit_file(tmp: str, path: str) -> bool:
    """Puts ``tmp`` at ``path`` unless a file is there (exclusive link); removes ``tmp``.

    Returns:
      True if this call committed ``path``, False if another writer had.
    """
    try:
        os.link(tmp, path)
        return True
    except OSError as e:
        if not is_exists_error(e):
            raise
        return False
    finally:
        os.remove(tmp)


def commit_dir(tmp: str, path: str) -> bool:
    """Renames the directory ``tmp`` to ``path`` unless ``path`` exists (then removes ``tmp``).

    Returns:
      True if this call committed ``path``, False if another writer had.
    """
    try:
        os.rename(tmp, path)  # onto an existing non-empty directory: EEXIST / ENOTEMPTY
        return True
    except OSError as e:
        if not (is_exists_error(e) or (e.errno == 20 and os.path.isdir(path))):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


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


def clean_stale(root: str, dead: Callable[[str], bool] = lambda token: True) -> list[str]:
    """Removes the temporary files and directories of dead writers under ``root``.

    Looks in ``root``, ``shards/`` and ``embed/`` (the job writes nowhere else).

    Args:
      root: the output directory.
      dead: token -> whether that writer is known dead (``Worker.dead``); files of
        format 1 (no token) are always stale.

    Returns:
      The paths removed.
    """
    removed = []
    for d in (root, os.path.join(root, "shards"), os.path.join(root, "embed")):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            m = _TMP.search(name)
            if m is None:
                continue
            token = m.group("a") or m.group("b")
            if token is not None and not dead(token):
                continue
            path = os.path.join(d, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    continue
            removed.append(path)
    return removed


def shard_name(k: int) -> str:
    return f"{k:06d}"


class Layout:
    """The paths of a job's output directory (the format: ``pairviz_jax.batch``)."""

    def __init__(self, out_dir: str):
        self.root = os.path.abspath(out_dir)
        self.shards = os.path.join(self.root, "shards")
        self.embed = os.path.join(self.root, "embed")
        self.png = os.path.join(self.root, "png")
        self.job = os.path.join(self.root, "job.json")
        self.images = os.path.join(self.root, "images.txt")
        self.pairs = os.path.join(self.root, "pairs.npy")
        self.prepared = os.path.join(self.root, "prepared.json")
        self.manifest = os.path.join(self.root, "manifest.json")
        self.unreadable = os.path.join(self.root, "unreadable.txt")

    def shard(self, k: int, what: str = "") -> str:
        return os.path.join(self.shards, shard_name(k), what)

    def chunk(self, c: int, what: str = "") -> str:
        return os.path.join(self.embed, shard_name(c), what)

    def tmp_dir(self, final: str, token: str) -> str:
        """A writer's temporary directory beside ``final`` (committed by ``commit_dir``)."""
        head, tail = os.path.split(final.rstrip(os.sep))
        return os.path.join(head, f".{tail}.{token}.tmp")

    def done_shards(self) -> set[int]:
        return _committed(self.shards)

    def done_chunks(self) -> set[int]:
        return _committed(self.embed)


def _committed(d: str) -> set[int]:
    try:
        return {int(n) for n in os.listdir(d) if n.isdigit()}
    except FileNotFoundError:
        return set()


class BatchResults:
    """Reads a batch job's output with memory maps (nothing is loaded until indexed).

    Args:
      out_dir: the job's output directory.
      partial: also open an unfinished job (its committed shards only).

    Attributes:
      images: the distinct image keys.
      num_pairs: records in the job (written or skipped).
      job_id: the job's identity (``job.json``); every shard read carries it.
      shards: per committed shard, a dict of memory-mapped arrays ``record``,
        ``maps_a``, ``maps_b``, ``score``.

    Raises:
      ValueError: a shard of another job (its ``job_id`` differs), or unfinished.
    """

    def __init__(self, out_dir: str, *, partial: bool = False):
        self.layout = Layout(out_dir)
        job = read_json(self.layout.job)
        if job is None:
            raise FileNotFoundError(f"{out_dir} holds no batch job (no job.json)")
        self.fingerprint = job["fingerprint"]
        self.job_id = job.get("job_id")
        manifest = read_json(self.layout.manifest)
        if manifest is None and not partial:
            raise ValueError(f"{out_dir} is not finished (no manifest.json); pass partial=True")
        self.images = read_keys(self.layout.images)
        if self.fingerprint["mode"] == "all":
            self._pairs: ArrayPairs | AllPairs = AllPairs(len(self.images))
        else:
            self._pairs = ArrayPairs(np.load(self.layout.pairs, mmap_mode="r"))
        self.num_pairs = len(self._pairs)
        size = self.shard_size = self.fingerprint["shard_size"]
        self.shards = [self._open(s, size) for s in self._names()]
        self._by_start = {sh["start"]: sh for sh in self.shards}

    def _names(self) -> list[int]:
        if self.job_id is None:  # format 1: shards/<k>.json beside flat files
            names = os.listdir(self.layout.shards)
            return sorted(int(f[:-5]) for f in names if f.endswith(".json"))
        return sorted(self.layout.done_shards())

    def _open(self, s: int, size: int) -> dict[str, Any]:
        if self.job_id is None:
            path = lambda what: os.path.join(self.layout.shards, f"{shard_name(s)}.{what}.npy")  # noqa: E731
        else:
            marker = read_json(self.layout.shard(s, "shard.json"))
            if marker is None or marker.get("job_id") != self.job_id:
                raise ValueError(
                    f"{self.layout.shard(s)} belongs to another job "
                    f"({None if marker is None else marker.get('job_id')}, not {self.job_id})"
                )
            path = lambda what: self.layout.shard(s, f"{what}.npy")  # noqa: E731
        shard = {
            what: np.load(path(what), mmap_mode="r")
            for what in ("record", "maps_a", "maps_b", "score")
        }
        shard["start"] = s * size
        return shard

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
