"""Paired maps for millions of pairs: streaming, sharded, resumable batch jobs.

A job explains a list of image pairs (a pairs file, every query against its
top-k neighbours in a gallery, or all pairs of a set). Each distinct image is
embedded once (``explain.features`` + ``explain.fold``: W [N, E] and u [E]);
a pair then costs one [N, E] x [E] product per direction, through
``explain.cross_maps`` in one of two ways, chosen per shard:

* ``gather``: chunks of pairs, ``cross_maps`` on 1 x 1 blocks vmapped over the
  chunk (cost per pair; any pairs);
* ``tile``: the shard's pairs grouped by blocks of image A, one ``cross_maps``
  product per block against every image, then the pairs picked out (cost per
  block; wins when the pairs are dense among few images, e.g. 10^6 among 1,000).

Calls are compiled once and split over the local devices (a ``Mesh`` with one
``"data"`` axis; W and u replicated). With ``jax.distributed`` the images are
embedded on the global mesh (every process decodes its slice of each batch)
and process p computes shards p, p + P, ...; the output directory must be on a
filesystem all processes share. Results stream to disk shard by shard, so host
memory does not grow with the number of pairs. It does grow with the number
of distinct images: W of every image is held on each device (I x N x E
float32: 16 KB per demo image, 512 KB per ViT-B/16 image at 256 px).

Output directory (the format; every array is a plain ``.npy`` that
``np.load(path, mmap_mode="r")`` maps without reading)::

    job.json                  what was asked (fingerprint), written once the inputs are ready
    images.txt                the distinct images, one key per line; image i = line i
    pairs.npy                 int32 [P, 2]: record r is the pair (image pairs[r, 0], pairs[r, 1])
                              (absent for ``all_pairs``: record r is the r-th pair i < j in
                              row-major order; ``BatchResults.pairs`` computes it)
    embed/w.npy, unit.npy, ok.npy   the folded images (float32 [I, N, E], [I, E]), readable flags
    unreadable.txt            key <TAB> reason, one line per image that could not be read
    shards/<k>.record.npy     int64 [n]: the records of shard k (ascending; pairs with an
                              unreadable image are left out)
    shards/<k>.maps_a.npy     float16 [n, gh, gw]: image A's token-grid map against B (eq. 6)
    shards/<k>.maps_b.npy     float16 [n, gh, gw]: image B's map against A
    shards/<k>.score.npy      float32 [n]: the cosine similarity (the sum of a ``transpose`` map)
    shards/<k>.json           the commit marker of shard k: {"shard", "start", "stop", "written",
                              "skipped", "process"}; a shard exists only once its marker does
    manifest.json             written when every shard is committed: shards, counts, grid
    png/<record>.png          optional figures of the first N records: A, A's map over A,
                              B's map over B, B (``plotting.paper_overlay``, the authors' look)

Shard k holds records ``[k * shard_size, (k + 1) * shard_size)``. Every file is
written under a temporary name and renamed into place, the marker last, so a
job killed at any moment leaves only whole shards; the same command run again
skips committed shards and recomputes the rest: no pair is lost or written
twice. A restart whose inputs, model or settings differ from ``job.json`` is
refused. A job killed while embedding (before ``job.json`` exists) embeds again
on restart. Files are not fsync-ed: this survives a killed process, not a lost
machine.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pairviz_jax import explain
from pairviz_jax.data import preprocess
from pairviz_jax.data.images import CorruptImageError, decode_image

__all__ = [
    "AllPairs",
    "ArrayPairs",
    "BatchResults",
    "ImageLoader",
    "Progress",
    "image_keys",
    "read_keys",
    "read_pairs_file",
    "run_batch",
    "top_k_pairs",
]

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
_HEADERS = {("a", "b"), ("image_a", "image_b"), ("query", "gallery"), ("path_a", "path_b")}


# --------------------------------------------------------------------------- files


def _atomic_save(path: str, array: np.ndarray) -> None:
    """Writes ``array`` to ``path`` (.npy) under a temporary name, then renames it."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
    os.replace(tmp, path)


def _atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _sha256_file(path: str) -> str:
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


# --------------------------------------------------------------------------- images


class ImageLoader:
    """Reads one image by key and returns the model's input.

    A key is ``DATASET:SPLIT:INDEX`` (a record of a ``pairviz_jax.data``
    dataset, e.g. ``demo:test:12``; for the demo the index is the ``id``), a
    bare record index of ``dataset``/``split`` when those are given, or a file
    path (relative ones resolved against ``root``).

    Args:
      image_size: (height, width) the images are resized to (no crop, as the authors).
      normalization: a key of ``pairviz_jax.data.NORMALIZATION``, a ``(mean, std)``
        pair (per channel, of [0, 1] images), or None (only scaled to [0, 1]).
      dataset: the dataset of bare indices, or None.
      split: its split.
      data_dir: TFDS data directory of prepared datasets.
      root: directory that relative paths are resolved against.
      demo_examples_per_class: size of the demo dataset (None: its default).
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        normalization: str | tuple[Sequence[float], Sequence[float]] | None,
        *,
        dataset: str | None = None,
        split: str = "test",
        data_dir: str | None = None,
        root: str | None = None,
        demo_examples_per_class: int | None = None,
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(int(s) for s in image_size)
        if isinstance(normalization, str):
            if normalization not in preprocess.NORMALIZATION:
                raise ValueError(
                    f"unknown normalization {normalization!r}; "
                    f"known: {sorted(preprocess.NORMALIZATION)}"
                )
            normalization = preprocess.NORMALIZATION[normalization]
        if normalization is None or normalization[0] is None:
            self.mean = self.std = None
        else:
            self.mean = tuple(float(v) for v in normalization[0])
            self.std = tuple(float(v) for v in normalization[1])
        self.dataset, self.split, self.data_dir, self.root = dataset, split, data_dir, root
        self.demo_examples_per_class = demo_examples_per_class
        self._sources: dict[tuple[str, str], Any] = {}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "mean": self.mean,
            "std": self.std,
            "dataset": self.dataset,
            "split": self.split if self.dataset else None,
            "root": self.root,
            "demo_examples_per_class": self.demo_examples_per_class,
        }

    def _source(self, name: str, split: str):
        if (name, split) not in self._sources:
            from pairviz_jax.data import sources

            h, w = self.image_size
            try:
                self._sources[name, split] = sources.open_source(
                    name,
                    split,
                    data_dir=self.data_dir,
                    image_size=h if h == w else None,
                    demo_examples_per_class=self.demo_examples_per_class,
                )
            except ValueError as e:
                raise CorruptImageError(f"{name}:{split}: {e}") from e
        return self._sources[name, split]

    def _parse(self, key: str) -> tuple[str, str, int] | None:
        parts = key.split(":")
        if len(parts) == 3 and parts[2].isdigit():
            from pairviz_jax.data import sources

            if parts[0] in sources.DATASETS:
                return parts[0], parts[1], int(parts[2])
        if self.dataset is not None and key.isdigit():
            return self.dataset, self.split, int(key)
        return None

    def uint8(self, key: str) -> np.ndarray:
        """The resized image, uint8 [H, W, 3].

        Raises:
          CorruptImageError: if the image is missing or cannot be decoded.
        """
        parsed = self._parse(key)
        if parsed is None:
            path = key if self.root is None else os.path.join(self.root, key)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise CorruptImageError(f"{path}: cannot read ({e})") from e
            image = decode_image(data, min_size=self.image_size, where=path)
        else:
            name, split, index = parsed
            source = self._source(name, split)
            if not 0 <= index < len(source):
                raise CorruptImageError(f"{name}:{split} has no record {index} ({len(source)})")
            raw = source[index]
            if raw is None:
                raise CorruptImageError(f"{name}:{split}:{index} is unreadable")
            image = decode_image(raw["image"], min_size=self.image_size, where=key)
        out, _ = preprocess.eval_resize(image, image_size=self.image_size)
        return out

    def __call__(self, key: str) -> np.ndarray:
        """The normalised model input, float32 [H, W, 3]."""
        x = self.uint8(key)
        if self.mean is None:
            return x.astype(np.float32) / np.float32(255.0)
        return preprocess.normalize(x, self.mean, self.std)


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
      pairs_out: where to write the pairs (written atomically).

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
    tmp = f"{pairs_out}.tmp{os.getpid()}"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(count, 2))
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
    os.replace(tmp, pairs_out)
    return list(index)


def _block_top_k(q: jax.Array, g: jax.Array, q_ids: jax.Array, g_ids: jax.Array, g_ok, k: int):
    scores = jnp.einsum("qe,ge->qg", q, g, precision=jax.lax.Precision.HIGHEST)
    scores = jnp.where(q_ids[:, None] == g_ids[None, :], -jnp.inf, scores)  # never itself
    scores = jnp.where(g_ok[None, :], scores, -jnp.inf)
    return jax.lax.top_k(scores, k)[1]


_TOP_K = jax.jit(_block_top_k, static_argnums=5)


def top_k_pairs(
    unit_q: np.ndarray,
    unit_g: np.ndarray,
    k: int,
    *,
    q_ids: np.ndarray | None = None,
    g_ids: np.ndarray | None = None,
    g_ok: np.ndarray | None = None,
    mesh: Mesh | None = None,
    block: int | None = None,
) -> np.ndarray:
    """Each query's k most similar gallery images, computed blockwise on the devices.

    Blocks of queries are split over the mesh's ``data`` axis; the gallery is
    replicated. A block's similarity matrix is at most ~64 MB.

    Args:
      unit_q: unit embeddings of the queries, [Q, E].
      unit_g: unit embeddings of the gallery, [G, E].
      k: neighbours per query (at most G, or G - 1 when queries are in the gallery).
      q_ids: image ids [Q] of the queries; a gallery image with the same id is
        never a neighbour (the query itself). Default: no exclusion.
      g_ids: image ids [G] of the gallery.
      g_ok: bool [G]; False excludes an image (unreadable).
      mesh: the devices (default all local devices).
      block: queries per block (a multiple of the devices; default by memory).

    Returns:
      int32 [Q, k]: gallery indices, most similar first.
    """
    nq, ng = unit_q.shape[0], unit_g.shape[0]
    if not 0 < k <= ng:
        raise ValueError(f"k must be in [1, {ng}] (the gallery size), got {k}")
    if q_ids is None:
        q_ids = np.full(nq, -1, np.int64)
        g_ids = np.full(ng, -2, np.int64)
    g_ok = np.ones(ng, bool) if g_ok is None else np.asarray(g_ok, bool)
    mesh = mesh or Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
    d = mesh.devices.size
    if block is None:
        block = max(d, min(4096, (16 << 20) // max(ng, 1)) // d * d)
    block = max(d, block // d * d)
    rep, shard = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    fn = _TOP_K
    g = jax.device_put(np.asarray(unit_g, np.float32), rep)
    gi = jax.device_put(np.asarray(g_ids, np.int64).astype(np.int32), rep)
    go = jax.device_put(g_ok, rep)
    out = np.empty((nq, k), np.int32)
    for s in range(0, nq, block):
        e = min(s + block, nq)
        q = np.zeros((block, unit_q.shape[1]), np.float32)
        q[: e - s] = unit_q[s:e]
        qi = np.full(block, -3, np.int32)
        qi[: e - s] = np.asarray(q_ids[s:e], np.int64)
        q, qi = jax.device_put(q, shard), jax.device_put(qi, shard)
        out[s:e] = np.asarray(fn(q, g, qi, gi, go, k))[: e - s]
    return out


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar: done / total pairs, pairs/s over this run, ETA.

    Args:
      total: pairs in the job (or this process's share).
      initial: pairs already done before this run (a resumed job).
      stream: where to write (default stderr); None disables output.
      every: seconds between updates (default 0.5 on a terminal, where the line is
        redrawn in place, and 10 in a log file, one line each).
    """

    def __init__(self, total: int, initial: int = 0, stream=sys.stderr, every: float | None = None):
        self.total, self.done, self.start_done = total, initial, initial
        self.stream = stream
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.every = (0.5 if self.tty else 10.0) if every is None else every

    @property
    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = self.total - self.done
        eta = left / rate if rate > 0 else math.inf
        pct = 100.0 * self.done / max(self.total, 1)
        eta_s = "?" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        bar = "#" * fill + "." * (width - fill)
        return (
            f"[{bar}] {self.done:,}/{self.total:,} pairs {pct:5.1f}%  "
            f"{rate:,.0f} pairs/s  ETA {eta_s}"
        )

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.perf_counter()
        if self.stream is None or not (force or now - self.last >= self.every):
            return
        self.last = now
        end = "\r" if self.tty else "\n"
        self.stream.write(self.line() + end)
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.update(0, force=True)
            if self.tty:
                self.stream.write("\n")


# --------------------------------------------------------------------------- embedding


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _replicate(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


@functools.lru_cache(maxsize=16)
def _embed_fn(model, convention: str, start_layer: int):
    """One compiled forward + fold per (model, convention, start_layer), reused across jobs."""

    def fn(variables, images):
        f = explain.features(model, variables, images, head_fusion="mean")
        folded = explain.fold(f, convention=convention, start_layer=start_layer)
        return folded.w, folded.unit

    return jax.jit(fn)


def embed_images(
    model,
    variables,
    loader: Callable[[str], np.ndarray],
    keys: Sequence[str],
    *,
    convention: str = "authors",
    start_layer: int = 0,
    batch_size: int = 64,
    num_threads: int = 8,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Embeds and folds every image once, on the global mesh (all devices, all processes).

    Each global batch is split over the processes (process p decodes its
    consecutive slice), run sharded over every device, and gathered back to
    every process.

    Args:
      model, variables: a mean-pooled ViT and its variables.
      loader: key -> normalised float32 [H, W, 3]; raises ``CorruptImageError``.
      keys: the I distinct images.
      convention, start_layer: as ``explain.fold``.
      batch_size: images per global batch (rounded up to a multiple of the devices).
      num_threads: decoding threads per process.
      progress: print a line per batch to stderr (process 0).

    Returns:
      ``(w float32 [I, N, E], unit float32 [I, E], ok bool [I], errors)`` with
      ``errors`` the (key, reason) of this process's unreadable images.
    """
    mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
    nproc, pid = jax.process_count(), jax.process_index()
    d = mesh.devices.size
    batch_size = max(d, math.ceil(batch_size / d) * d)
    local = batch_size // nproc
    shard = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    rep = NamedSharding(mesh, PartitionSpec())
    variables = jax.tree.map(lambda x: _replicate(x, rep), variables)
    fn = _embed_fn(model, convention, start_layer)
    n = len(keys)
    w = unit = None
    ok = np.zeros(n, bool)
    errors: list[tuple[str, str]] = []
    example_shape = None
    t0 = time.perf_counter()

    def load(key):
        try:
            return loader(key), None
        except CorruptImageError as e:
            return None, str(e)

    from jax.experimental import multihost_utils

    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        for s in range(0, n, batch_size):
            mine = range(s + pid * local, min(s + (pid + 1) * local, n))
            loaded = list(pool.map(load, [keys[i] for i in mine]))
            for x, _ in loaded:
                if x is not None and example_shape is None:
                    example_shape = x.shape
            if example_shape is None:  # nothing readable yet in this process: probe
                for key in keys:
                    x, _ = load(key)
                    if x is not None:
                        example_shape = x.shape
                        break
                else:
                    raise ValueError("no image of the job could be read")
            images = np.zeros((local, *example_shape), np.float32)
            good = np.zeros(local, bool)
            for j, ((x, err), i) in enumerate(zip(loaded, mine, strict=True)):
                if x is None:
                    errors.append((keys[i], err))
                    logger.warning("skipping unreadable image %s: %s", keys[i], err)
                elif x.shape != example_shape:
                    msg = f"shape {x.shape} differs from {example_shape}"
                    errors.append((keys[i], msg))
                else:
                    images[j], good[j] = x, True
            g_images = jax.make_array_from_process_local_data(shard, images)
            g_good = jax.make_array_from_process_local_data(shard, good)
            out = fn(variables, g_images)
            if nproc > 1:
                bw, bu, bok = multihost_utils.process_allgather((*out, g_good), tiled=True)
            else:
                bw, bu, bok = jax.device_get((*out, g_good))
            if w is None:
                w = np.zeros((n, *bw.shape[1:]), np.float32)
                unit = np.zeros((n, bu.shape[1]), np.float32)
            e = min(s + batch_size, n)
            # Global batch order: process 0's slice, then process 1's, ...
            w[s:e], unit[s:e], ok[s:e] = bw[: e - s], bu[: e - s], bok[: e - s]
            if progress and pid == 0:
                rate = e / (time.perf_counter() - t0)
                sys.stderr.write(f"embedded {e:,}/{n:,} images ({rate:,.1f} images/s)\n")
    return w, unit, ok, errors


# --------------------------------------------------------------------------- pairs kernel


def _pairs_kernel(w: jax.Array, unit: jax.Array, idx: jax.Array, grid: tuple[int, int]):
    """Maps of C pairs: cross_maps on 1 x 1 blocks, vmapped over the chunk.

    Args:
      w: W of every image, [I, N, E]; unit: u, [I, E]; idx: [C, 2] image indices.

    Returns:
      ``(maps_a float16 [C, gh, gw], maps_b float16 [C, gh, gw], score float32 [C])``.
    """
    a, b = idx[:, 0], idx[:, 1]
    fa = explain.Folded(w=w[a][:, None], unit=unit[a][:, None], grid=grid)
    fb = explain.Folded(w=w[b][:, None], unit=unit[b][:, None], grid=grid)
    out = jax.vmap(explain.cross_maps)(fa, fb)
    return (
        out["maps_q"][:, 0, 0].astype(jnp.float16),
        out["maps_g"][:, 0, 0].astype(jnp.float16),
        out["score"][:, 0, 0],
    )


def _tile_kernel(
    w: jax.Array,
    unit: jax.Array,
    starts: jax.Array,
    idx: jax.Array,
    grid: tuple[int, int],
    block: int,
):
    """Maps of pairs grouped by image blocks: one ``cross_maps`` matrix product per block.

    Work item t is the block of images ``starts[t] .. starts[t] + block - 1``
    against every image; its pairs are gathered from that block's cross maps.

    Args:
      w: W of every image, [I, N, E] (I a multiple of ``block``); unit: u, [I, E].
      starts: [T] first image of each item's block.
      idx: [T, C, 2]: (image - starts[t], other image) of each item's pairs.

    Returns:
      ``(maps_a float16 [T, C, gh, gw], maps_b float16 [T, C, gh, gw], score float32 [T, C])``.
    """
    g = explain.Folded(w=w, unit=unit, grid=grid)

    def one(start, ix):
        q = explain.Folded(
            w=jax.lax.dynamic_slice_in_dim(w, start, block),
            unit=jax.lax.dynamic_slice_in_dim(unit, start, block),
            grid=grid,
        )
        out = explain.cross_maps(q, g)  # [block, I, ...]: one matrix product
        ia, ib = ix[:, 0], ix[:, 1]
        return (
            out["maps_q"][ia, ib].astype(jnp.float16),
            out["maps_g"][ia, ib].astype(jnp.float16),
            out["score"][ia, ib],
        )

    return jax.vmap(one)(starts, idx)


# Compiled once per process (per shapes and shardings): the inputs are placed on the mesh
# (W and u replicated, pairs split over "data") and the outputs follow the pairs.
_GATHER = jax.jit(_pairs_kernel, static_argnums=3)
_TILE = jax.jit(_tile_kernel, static_argnums=(4, 5))


class _Compute:
    """Dispatches a shard's pairs to the devices, by one of two strategies.

    * ``gather``: chunks of C pairs; each pair's W is gathered (cost per pair).
    * ``tile``: pairs grouped by blocks of ``block`` images of A; each block is
      one ``cross_maps`` product against all images (cost per block), which
      wins when pairs are dense among few images (10^6 pairs among 1,000).

    ``auto`` picks per shard: tile when the blocks' products cost at most
    ``32x`` the multiply-adds of the pairs themselves.
    """

    def __init__(self, w, unit, grid, mesh, chunk_size: int, strategy: str):
        self.grid, self.strategy = grid, strategy
        d = mesh.devices.size
        self.devices = d
        n_img, n_tok, emb = w.shape
        self.chunk = chunk_size
        rep = NamedSharding(mesh, PartitionSpec())
        self.split = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        # Blocks of A images: ~32 MB of cross maps per device and direction.
        self.block = int(max(1, min(n_img, (8 << 20) // max(n_img * n_tok, 1))))
        n_pad = math.ceil(n_img / self.block) * self.block
        w = np.asarray(w, np.float32)
        unit = np.asarray(unit, np.float32)
        if n_pad > n_img:
            w = np.concatenate([w, np.zeros((n_pad - n_img, n_tok, emb), np.float32)])
            unit = np.concatenate([unit, np.zeros((n_pad - n_img, emb), np.float32)])
        self.n_img, self.n_pad = n_img, n_pad
        self.w = jax.device_put(w, rep)
        self.unit = jax.device_put(unit, rep)
        self.gather_fn = _GATHER
        self.tile_fn = _TILE

    def _use_tile(self, pairs: np.ndarray) -> bool:
        if self.strategy != "auto":
            return self.strategy == "tile"
        blocks = len(np.unique(pairs[:, 0] // self.block))
        return blocks * self.block * self.n_pad <= 32 * len(pairs)

    def calls(self, pairs: np.ndarray) -> Iterator[tuple[np.ndarray, Any]]:
        """Yields (positions [M] in ``pairs``, -1 for padding; device outputs [M, ...])."""
        if self._use_tile(pairs):
            yield from self._tile_calls(pairs)
            return
        c = self.chunk
        for s in range(0, len(pairs), c):
            e = min(s + c, len(pairs))
            idx = np.zeros((c, 2), np.int32)
            idx[: e - s] = pairs[s:e]
            pos = np.full(c, -1, np.int64)
            pos[: e - s] = np.arange(s, e)
            yield pos, self.gather_fn(self.w, self.unit, jax.device_put(idx, self.split), self.grid)

    def _tile_calls(self, pairs: np.ndarray) -> Iterator[tuple[np.ndarray, Any]]:
        d = self.devices
        blk = pairs[:, 0] // self.block
        order = np.argsort(blk, kind="stable")
        bounds = np.flatnonzero(np.diff(blk[order])) + 1
        groups = np.split(order, bounds)  # the pairs of each block of A images
        # One item per block (a block's product is computed once), its pairs padded to a
        # power of two so that few shapes compile.
        c = 1 << int(max(len(g) for g in groups) - 1).bit_length()
        for s in range(0, len(groups), d):
            part = groups[s : s + d]
            starts = np.zeros(d, np.int32)
            idx = np.zeros((d, c, 2), np.int32)
            pos = np.full((d, c), -1, np.int64)
            for t, where in enumerate(part):
                b = int(blk[where[0]])
                starts[t] = b * self.block
                idx[t, : len(where), 0] = pairs[where, 0] - b * self.block
                idx[t, : len(where), 1] = pairs[where, 1]
                pos[t, : len(where)] = where
            out = self.tile_fn(
                self.w,
                self.unit,
                jax.device_put(starts, self.split),
                jax.device_put(idx, self.split),
                self.grid,
                self.block,
            )
            yield pos.reshape(-1), out


# --------------------------------------------------------------------------- the job


def _shard_name(k: int) -> str:
    return f"{k:06d}"


class _Layout:
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
        return os.path.join(self.shards, f"{_shard_name(k)}.{what}")

    def done(self, k: int) -> bool:
        return os.path.exists(self.shard(k, "json"))


def _png(path: str, image_a, image_b, map_a, map_b) -> None:
    """A row of four: A, A's map over A, B's map over B, B (the authors' renderer)."""
    from PIL import Image

    from pairviz_jax.plotting.paper import paper_overlay

    over_a = paper_overlay(image_a, np.asarray(map_a, np.float32))
    over_b = paper_overlay(image_b, np.asarray(map_b, np.float32))
    Image.fromarray(np.concatenate([image_a, over_a, over_b, image_b], axis=1)).save(path)


@dataclasses.dataclass
class _Plan:
    keys: list[str]
    pairs: ArrayPairs | AllPairs
    w: np.ndarray
    unit: np.ndarray
    ok: np.ndarray


def _prepare(
    layout: _Layout,
    fingerprint: dict,
    mode: str,
    model,
    variables,
    loader,
    *,
    pairs_file: str | None,
    images: Sequence[str] | None,
    gallery: Sequence[str] | None,
    k: int | None,
    convention: str,
    start_layer: int,
    embed_batch: int,
    progress: bool,
) -> _Plan:
    """Reads the inputs, embeds the images, lists the pairs; or loads all of it on resume."""
    pid = jax.process_index()
    job = _read_json(layout.job)
    if job is not None:
        if job["fingerprint"] != fingerprint:
            diff = sorted(
                key
                for key in set(job["fingerprint"]) | set(fingerprint)
                if job["fingerprint"].get(key) != fingerprint.get(key)
            )
            raise ValueError(
                f"{layout.root} holds a different job (differs in {diff}); resume with the same "
                "command, or write to a new output directory"
            )
        if pid == 0:  # what a killed run left half-written; nobody writes before the barrier
            for name in os.listdir(layout.shards):
                if ".tmp" in name:
                    os.remove(os.path.join(layout.shards, name))
        _barrier("pairviz_batch_resumed")
        keys = read_keys(layout.images)
        pairs = AllPairs(len(keys)) if mode == "all" else ArrayPairs(np.load(layout.pairs, "r"))
        w = np.load(os.path.join(layout.embed, "w.npy"), mmap_mode="r")
        unit = np.load(os.path.join(layout.embed, "unit.npy"))
        ok = np.load(os.path.join(layout.embed, "ok.npy"))
        return _Plan(keys, pairs, np.asarray(w), unit, ok)

    for d in (layout.root, layout.shards, layout.embed):
        os.makedirs(d, exist_ok=True)
    if mode == "pairs":
        if pid == 0:
            keys = read_pairs_file(pairs_file, layout.pairs)
            _atomic_text(layout.images, "".join(f"{key}\n" for key in keys))
        _barrier("pairviz_batch_pairs_read")
        keys = read_keys(layout.images)
    else:
        keys = list(dict.fromkeys([*images, *(gallery or [])]))
        for key in keys:
            if "\n" in key or not key.strip() or key != key.strip():
                raise ValueError(f"image key {key!r} is empty or has surrounding whitespace")
        if pid == 0:
            _atomic_text(layout.images, "".join(f"{key}\n" for key in keys))

    w, unit, ok, errors = embed_images(
        model,
        variables,
        loader,
        keys,
        convention=convention,
        start_layer=start_layer,
        batch_size=embed_batch,
        progress=progress,
    )
    if errors:
        with open(f"{layout.unreadable}.p{pid}", "w", encoding="utf-8") as f:
            f.writelines(f"{key}\t{reason}\n" for key, reason in errors)
    _barrier("pairviz_batch_embedded")
    if pid == 0:
        lines = []
        for p in range(jax.process_count()):
            part = f"{layout.unreadable}.p{p}"
            if os.path.exists(part):
                with open(part, encoding="utf-8") as f:
                    lines.extend(f.readlines())
                os.remove(part)
        _atomic_text(layout.unreadable, "".join(lines))
        _atomic_save(os.path.join(layout.embed, "w.npy"), w)
        _atomic_save(os.path.join(layout.embed, "unit.npy"), unit)
        _atomic_save(os.path.join(layout.embed, "ok.npy"), ok)
        if mode == "topk":
            index = {key: i for i, key in enumerate(keys)}
            qi = np.asarray([index[key] for key in images], np.int64)
            gi = np.asarray([index[key] for key in (gallery or images)], np.int64)
            kk = min(k, len(gi) - (0 if gallery else 1))
            if kk < 1:
                raise ValueError(f"the gallery has {len(gi)} images: too few for top-k")
            nn_ = top_k_pairs(unit[qi], unit[gi], kk, q_ids=qi, g_ids=gi, g_ok=ok[gi])
            pairs = np.stack([np.repeat(qi, kk), gi[nn_.reshape(-1)]], axis=1).astype(np.int32)
            _atomic_save(layout.pairs, pairs)
        _atomic_text(layout.job, json.dumps({"fingerprint": fingerprint}, indent=1))
    _barrier("pairviz_batch_prepared")
    pairs = AllPairs(len(keys)) if mode == "all" else ArrayPairs(np.load(layout.pairs, "r"))
    return _Plan(keys, pairs, w, unit, ok)


def run_batch(
    model,
    variables,
    loader: ImageLoader,
    out_dir: str,
    *,
    pairs_file: str | None = None,
    images: Sequence[str] | None = None,
    gallery: Sequence[str] | None = None,
    top_k: int | None = None,
    all_pairs: bool = False,
    convention: str = "authors",
    start_layer: int = 0,
    shard_size: int = 16384,
    chunk_size: int | None = None,
    strategy: str = "auto",
    embed_batch: int = 64,
    png_first: int = 0,
    model_id: str = "",
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Paired maps for many pairs, streamed to ``out_dir`` (format: module docstring).

    One of three inputs:

    * ``pairs_file``: a CSV/TSV of two image keys per line (``read_pairs_file``);
    * ``images`` + ``top_k``: each image against its k most similar images of
      ``gallery`` (default: of ``images``, itself excluded);
    * ``images`` + ``all_pairs``: every unordered pair i < j.

    Run the same call again after a crash or kill to resume. With several
    processes (``jax.distributed.initialize`` first) every process makes the
    same call with the same ``out_dir`` on a shared filesystem.

    Args:
      model, variables: a mean-pooled model (``ViT(pool_type="gap")``) and its variables.
      loader: key -> normalised image (``ImageLoader``).
      out_dir: the output directory (created).
      pairs_file, images, gallery, top_k, all_pairs: the input (above).
      convention: ``"authors"`` or ``"transpose"`` (eq. 6, see ``explain.redistribute``).
      start_layer: first block of the rollout.
      shard_size: records per shard file.
      chunk_size: pairs per compiled call (a multiple of the local devices that
        divides ``shard_size``; default from the size of W, ~64 MB of gathers).
      strategy: ``"gather"``, ``"tile"`` or ``"auto"`` (per shard; see ``_Compute``).
      embed_batch: images per forward batch (global).
      png_first: also write PNG figures of records ``< png_first``.
      model_id: a name for the model (a checkpoint path) recorded in ``job.json``;
        the parameters themselves are fingerprinted.
      progress: print progress to stderr (process 0).
      on_shard: called with the shard index after each shard is committed.

    Returns:
      A summary dict: ``pairs``, ``written``, ``skipped``, ``shards``, ``images``,
      ``unreadable``, and for this run ``computed_shards``, ``seconds``,
      ``prepare_seconds`` (reading the inputs, decoding and embedding the images; the
      rest is the pairs) and ``pairs_per_s`` (in the pairs phase, compilation included).
    """
    t_start = time.perf_counter()
    modes = [pairs_file is not None, top_k is not None, bool(all_pairs)]
    if sum(modes) != 1:
        raise ValueError("give exactly one of pairs_file, images with top_k, images with all_pairs")
    mode = ("pairs", "topk", "all")[modes.index(True)]
    if mode != "pairs" and not images:
        raise ValueError(f"{mode} needs a non-empty list of images")
    if gallery is not None and mode != "topk":
        raise ValueError("gallery only goes with top_k")
    if convention not in explain.CONVENTIONS:
        raise ValueError(f"convention must be one of {explain.CONVENTIONS}, got {convention!r}")
    if getattr(model, "pool_type", "gap") != "gap":
        raise ValueError("paired maps need a mean-pooled model (pool_type='gap')")
    if strategy not in ("auto", "gather", "tile"):
        raise ValueError(f"strategy must be auto, gather or tile, got {strategy!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    layout = _Layout(out_dir)
    fingerprint = {
        "mode": mode,
        "pairs_file_sha256": _sha256_file(pairs_file) if pairs_file else None,
        "images_sha256": hashlib.sha256("\n".join(images or []).encode()).hexdigest(),
        "gallery_sha256": (
            hashlib.sha256("\n".join(gallery).encode()).hexdigest() if gallery else None
        ),
        "top_k": top_k,
        "convention": convention,
        "start_layer": start_layer,
        "shard_size": shard_size,
        "loader": loader.fingerprint() if hasattr(loader, "fingerprint") else repr(loader),
        "model": repr(model),
        "model_id": model_id,
        "params_sha256": params_fingerprint(variables),
    }
    fingerprint = json.loads(json.dumps(fingerprint))  # compared with what job.json holds
    manifest = _read_json(layout.manifest)
    if manifest is not None and manifest.get("fingerprint") == fingerprint:
        if progress and jax.process_index() == 0:
            sys.stderr.write(f"{layout.root}: already complete\n")
        return {**manifest["summary"], "computed_shards": 0, "seconds": 0.0, "pairs_per_s": 0.0}

    plan = _prepare(
        layout,
        fingerprint,
        mode,
        model,
        variables,
        loader,
        pairs_file=pairs_file,
        images=images,
        gallery=gallery,
        k=top_k,
        convention=convention,
        start_layer=start_layer,
        embed_batch=embed_batch,
        progress=progress,
    )
    prepare_seconds = time.perf_counter() - t_start
    total = len(plan.pairs)
    num_shards = math.ceil(total / shard_size)
    nproc, pid = jax.process_count(), jax.process_index()

    # Pairs on this process's devices: W and u replicated, chunks of pairs split.
    mesh = Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
    d = mesh.devices.size
    n_tok, emb = plan.w.shape[1], plan.w.shape[2]
    if chunk_size is None:
        chunk_size = max(d, min(shard_size, (64 << 20) // (2 * 4 * n_tok * emb)))
    chunk_size = max(d, math.ceil(min(chunk_size, shard_size) / d) * d)
    grid = _grid(model, loader, n_tok)
    compute = _Compute(plan.w, plan.unit, grid, mesh, chunk_size, strategy)

    mine = [s for s in range(pid, num_shards, nproc) if not layout.done(s)]
    share = sum(min(shard_size, total - s * shard_size) for s in range(pid, num_shards, nproc))
    remaining = sum(min(shard_size, total - s * shard_size) for s in mine)
    bar = Progress(share, share - remaining, sys.stderr if progress and pid == 0 else None)

    def calls() -> Iterator[tuple[int, np.ndarray, np.ndarray, Any, bool]]:
        for s in mine:
            lo, hi = s * shard_size, min((s + 1) * shard_size, total)
            pairs = plan.pairs.take(lo, hi)
            stream = compute.calls(pairs)
            item = next(stream)
            for following in stream:
                yield s, pairs, *item, False
                item = following
            yield s, pairs, *item, True

    written = skipped = computed = 0
    buf: dict[str, np.ndarray] = {}
    stream = calls()
    pending = next(stream, None)
    while pending is not None:
        s, pairs, pos, out, last = pending
        pending = next(stream, None)  # dispatch the next call before waiting on this one
        maps_a, maps_b, score = jax.device_get(out)
        maps_a = maps_a.reshape(len(pos), *grid)
        maps_b = maps_b.reshape(len(pos), *grid)
        score = score.reshape(len(pos))
        if not buf:
            n = len(pairs)
            buf = {
                "maps_a": np.empty((n, *maps_a.shape[1:]), np.float16),
                "maps_b": np.empty((n, *maps_b.shape[1:]), np.float16),
                "score": np.empty(n, np.float32),
                "pairs": pairs,
            }
        valid = pos >= 0
        where = pos[valid]
        buf["maps_a"][where], buf["maps_b"][where] = maps_a[valid], maps_b[valid]
        buf["score"][where] = score[valid]
        bar.update(int(valid.sum()))
        if last:
            lo = s * shard_size
            w_, s_ = _commit(layout, s, lo, lo + len(pairs), buf, plan, png_first, loader)
            written, skipped, computed = written + w_, skipped + s_, computed + 1
            buf = {}
            if on_shard is not None:
                on_shard(s)
    bar.close()
    _barrier("pairviz_batch_done")
    seconds = time.perf_counter() - t_start
    summary = {
        "pairs": total,
        "shards": num_shards,
        "images": len(plan.keys),
        "unreadable": int((~plan.ok).sum()),
        "grid": list(grid),
    }
    if pid == 0:
        missing = [s for s in range(num_shards) if not layout.done(s)]
        if missing:
            raise RuntimeError(f"shards {missing[:10]} of {layout.root} are not committed")
        markers = [_read_json(layout.shard(s, "json")) for s in range(num_shards)]
        summary["written"] = sum(m["written"] for m in markers)
        summary["skipped"] = sum(m["skipped"] for m in markers)
        _atomic_text(
            layout.manifest,
            json.dumps(
                {
                    "fingerprint": fingerprint,
                    "summary": summary,
                    "shards": [_shard_name(s) for s in range(num_shards)],
                },
                indent=1,
            ),
        )
    _barrier("pairviz_batch_manifest")
    summary = _read_json(layout.manifest)["summary"]
    done_here = bar.done - bar.start_done
    return {
        **summary,
        "computed_shards": computed,
        "seconds": seconds,
        "prepare_seconds": prepare_seconds,
        "pairs_per_s": done_here / max(time.perf_counter() - bar.t0, 1e-9),
        "written_this_run": written,
        "skipped_this_run": skipped,
    }


def _grid(model, loader, n_tok: int) -> tuple[int, int]:
    size = getattr(loader, "image_size", None)
    if size is not None and hasattr(model, "grid"):
        gh, gw = model.grid((*size, 3))
        if gh * gw == n_tok:
            return gh, gw
    k = math.isqrt(n_tok)
    if k * k != n_tok:
        raise ValueError(f"cannot tell the token grid of {n_tok} tokens")
    return k, k


def _commit(
    layout: _Layout, s: int, lo: int, hi: int, buf: dict, plan: _Plan, png_first: int, loader
) -> tuple[int, int]:
    """Writes shard s (records lo..hi-1) file by file, then its marker."""
    keep = plan.ok[buf["pairs"][:, 0]] & plan.ok[buf["pairs"][:, 1]]
    records = np.arange(lo, hi, dtype=np.int64)[keep]
    _atomic_save(layout.shard(s, "record.npy"), records)
    for name in ("maps_a", "maps_b", "score"):
        _atomic_save(layout.shard(s, f"{name}.npy"), buf[name][keep])
    if png_first > 0 and lo < png_first:
        os.makedirs(layout.png, exist_ok=True)
        for j in np.flatnonzero(keep[: max(0, png_first - lo)]):
            a, b = buf["pairs"][j]
            try:
                img_a, img_b = loader.uint8(plan.keys[a]), loader.uint8(plan.keys[b])
            except (CorruptImageError, AttributeError):
                continue
            _png(
                os.path.join(layout.png, f"{lo + j:09d}.png"),
                img_a,
                img_b,
                buf["maps_a"][j],
                buf["maps_b"][j],
            )
    marker = {
        "shard": s,
        "start": lo,
        "stop": hi,
        "written": int(keep.sum()),
        "skipped": int((~keep).sum()),
        "process": jax.process_index(),
    }
    _atomic_text(layout.shard(s, "json"), json.dumps(marker))
    return marker["written"], marker["skipped"]


# --------------------------------------------------------------------------- reading


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
        self.layout = _Layout(out_dir)
        job = _read_json(self.layout.job)
        if job is None:
            raise FileNotFoundError(f"{out_dir} holds no batch job (no job.json)")
        self.fingerprint = job["fingerprint"]
        manifest = _read_json(self.layout.manifest)
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


def run_loaded(
    loaded,
    out_dir: str,
    *,
    pairs_file: str | None = None,
    images: str | None = None,
    gallery: str | None = None,
    top_k: int | None = None,
    all_pairs: bool = False,
    root: str | None = None,
    data_dir: str | None = None,
    **kw,
) -> dict[str, Any]:
    """``run_batch`` for a loaded model (``plotting.load_run``/``load_weights``) and CLI inputs.

    Args:
      loaded: has ``model``, ``variables``, ``image_size``, ``mean``, ``std`` and ``label``.
      out_dir: the output directory.
      pairs_file: a pairs file, or None.
      images: with ``top_k``/``all_pairs``: a file of keys or ``DATASET:SPLIT[:N]``.
      gallery: with ``top_k``: the same kinds of spec (default ``images``).
      top_k, all_pairs: as ``run_batch``.
      root: directory relative image paths are resolved against (default: the
        pairs or images file's directory).
      data_dir: TFDS data directory of prepared datasets.
      **kw: further ``run_batch`` arguments (``convention``, ``shard_size``, ``png_first``).

    Returns:
      ``run_batch``'s summary.
    """
    spec_file = pairs_file or (images if images and os.path.isfile(images) else None)
    if root is None and spec_file is not None:
        root = os.path.dirname(os.path.abspath(spec_file))
    loader = ImageLoader(loaded.image_size, (loaded.mean, loaded.std), data_dir=data_dir, root=root)
    if pairs_file is not None:
        if images or gallery or top_k or all_pairs:
            raise ValueError("--pairs goes alone (not with --images, --gallery, --top-k, ...)")
        if not os.path.isfile(pairs_file):
            raise ValueError(f"--pairs {pairs_file}: no such file")
    elif images is None:
        raise ValueError("give --pairs FILE, or --images with --top-k K or --all-pairs")
    elif (top_k is None) == (not all_pairs):
        raise ValueError("--images needs exactly one of --top-k K and --all-pairs")
    return run_batch(
        loaded.model,
        loaded.variables,
        loader,
        out_dir,
        pairs_file=pairs_file,
        images=image_keys(images) if images else None,
        gallery=image_keys(gallery) if gallery else None,
        top_k=top_k,
        all_pairs=all_pairs,
        model_id=getattr(loaded, "label", ""),
        **kw,
    )
