"""Embedding and folding the images of a job, a chunk at a time, and reading them back.

The images are split into chunks of ``embed_chunk`` (a task each, claimed by any worker):
:class:`Embedder` folds one chunk on this process's devices (``explain.features`` +
``explain.fold``: W [N, E] and u [E] per image) and the job commits it as the directory
``embed/<c>/`` (``w.npy``, ``unit.npy``, ``ok.npy``, ``errors.txt``). :class:`EmbedStore`
reads any images' rows back from those files with memory maps opened per call, so no
process ever holds W of every image: host and device memory are bounded by a chunk of
pairs, not by the number of distinct images.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pairviz_jax import explain
from pairviz_jax.batch.kernels import DATA_AXIS
from pairviz_jax.data.images import CorruptImageError

__all__ = ["EmbedStore", "Embedder", "embed_images"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=16)
def _embed_fn(model, convention: str, start_layer: int):
    """One compiled forward + fold per (model, convention, start_layer), reused across jobs."""

    def fn(variables, images):
        f = explain.features(model, variables, images, head_fusion="mean")
        folded = explain.fold(f, convention=convention, start_layer=start_layer)
        return folded.w, folded.unit

    return jax.jit(fn)


class Embedder:
    """Folds lists of images on a mesh of this process's devices.

    Args:
      model, variables: a ViT (any pooling) and its variables.
      loader: key -> normalised float32 [H, W, 3]; raises ``CorruptImageError``. Its
        ``image_size`` (if any) shapes the zeros of a chunk with no readable image.
      mesh: the devices (a ``"data"`` axis); default this process's.
      convention, start_layer: as ``explain.fold``.
      batch_size: images per forward (rounded up to a multiple of the devices).
      num_threads: decoding threads.
    """

    def __init__(
        self,
        model,
        variables,
        loader: Callable[[str], np.ndarray],
        *,
        mesh: Mesh | None = None,
        convention: str = "authors",
        start_layer: int = 0,
        batch_size: int = 64,
        num_threads: int = 8,
    ):
        self.mesh = mesh or Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
        d = self.mesh.devices.size
        self.batch = max(d, math.ceil(batch_size / d) * d)
        self.split = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        self.variables = jax.device_put(variables, NamedSharding(self.mesh, PartitionSpec()))
        self.fn = _embed_fn(model, convention, start_layer)
        self.loader, self.threads = loader, max(1, num_threads)
        size = getattr(loader, "image_size", None)
        self.shape = None if size is None else (*size, 3)

    def _load(self, key: str):
        try:
            return self.loader(key), None
        except CorruptImageError as e:
            return None, str(e)

    def __call__(self, keys: Sequence[str]):
        """Folds ``keys``.

        Returns:
          ``(w float32 [n, N, E], unit float32 [n, E], ok bool [n], errors)`` with
          ``errors`` the (key, reason) of the unreadable images (their rows are zeros).
        """
        n = len(keys)
        w = unit = None
        ok = np.zeros(n, bool)
        errors: list[tuple[str, str]] = []
        with ThreadPoolExecutor(self.threads) as pool:
            for s in range(0, n, self.batch):
                e = min(s + self.batch, n)
                loaded = list(pool.map(self._load, keys[s:e]))
                shape = self.shape or next((x.shape for x, _ in loaded if x is not None), None)
                if shape is None:
                    raise ValueError(f"no image of {keys[s]}..{keys[e - 1]} could be read")
                images = np.zeros((self.batch, *shape), np.float32)
                for j, (x, err) in enumerate(loaded):
                    if x is None:
                        errors.append((keys[s + j], err))
                        logger.warning("skipping unreadable image %s: %s", keys[s + j], err)
                    elif x.shape != tuple(shape):
                        errors.append((keys[s + j], f"shape {x.shape} differs from {shape}"))
                    else:
                        images[j], ok[s + j] = x, True
                bw, bu = jax.device_get(self.fn(self.variables, jax.device_put(images, self.split)))
                if w is None:
                    w = np.zeros((n, *bw.shape[1:]), np.float32)
                    unit = np.zeros((n, bu.shape[1]), np.float32)
                w[s:e], unit[s:e] = bw[: e - s], bu[: e - s]
        return w, unit, ok, errors


def embed_images(model, variables, loader, keys: Sequence[str], **kw):
    """Folds ``keys`` on this process's devices (``Embedder``; kwargs go to it).

    Returns:
      ``(w float32 [I, N, E], unit float32 [I, E], ok bool [I], errors)``.
    """
    kw.pop("progress", None)
    return Embedder(model, variables, loader, **kw)(keys)


class EmbedStore:
    """The folded images of a job, read from its committed chunks ``embed/<c>/``.

    Args:
      chunk_dir: c -> the directory of chunk c.
      num_images: I.
      chunk: images per chunk (image i is row ``i % chunk`` of chunk ``i // chunk``).

    Attributes:
      ok: bool [I], the readable images (small: read once).
      token_shape: (N, E) of one W.
    """

    def __init__(self, chunk_dir: Callable[[int], str], num_images: int, chunk: int):
        self.chunk_dir, self.n, self.chunk = chunk_dir, int(num_images), int(chunk)
        self.num_chunks = math.ceil(self.n / self.chunk)
        self.ok = np.concatenate(
            [np.load(os.path.join(chunk_dir(c), "ok.npy")) for c in range(self.num_chunks)]
        )
        w0 = np.load(os.path.join(chunk_dir(0), "w.npy"), mmap_mode="r")
        self.token_shape = tuple(w0.shape[1:])

    @property
    def w_bytes(self) -> int:
        """Bytes of W of every image (float32)."""
        return self.n * math.prod(self.token_shape) * 4

    def _read(self, what: str, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64).reshape(-1)
        c = ids // self.chunk
        out = None
        for chunk in np.unique(c):
            rows = np.flatnonzero(c == chunk)
            m = np.load(os.path.join(self.chunk_dir(int(chunk)), f"{what}.npy"), mmap_mode="r")
            part = np.asarray(m[ids[rows] - chunk * self.chunk])  # a copy; the map is dropped
            if out is None:
                out = np.empty((len(ids), *part.shape[1:]), part.dtype)
            out[rows] = part
            del m
        return out

    def w(self, ids: np.ndarray) -> np.ndarray:
        """W of images ``ids``, float32 [n, N, E]."""
        return self._read("w", ids)

    def unit(self, ids: np.ndarray) -> np.ndarray:
        """u of images ``ids``, float32 [n, E]."""
        return self._read("unit", ids)

    def unit_range(self, lo: int, hi: int) -> np.ndarray:
        """u of images ``lo..hi-1``, float32 [hi - lo, E]."""
        return self.unit(np.arange(lo, hi))
