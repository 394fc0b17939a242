"""Embedding and folding every distinct image of a job once, on the global mesh."""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pairviz_jax import explain
from pairviz_jax.batch.kernels import DATA_AXIS
from pairviz_jax.data.images import CorruptImageError

__all__ = ["barrier", "embed_images"]

logger = logging.getLogger(__name__)


def barrier(name: str) -> None:
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
