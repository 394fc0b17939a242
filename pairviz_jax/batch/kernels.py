"""The compiled parts of a job: top-k neighbours and the maps of chunks of pairs.

Each distinct image is folded once (``explain.fold``: W [N, E], u [E]); a pair then costs one
[N, E] x [E] product per direction, through ``explain.cross_maps`` in one of two ways,
chosen per shard by :class:`Compute`:

* ``gather``: chunks of pairs, ``cross_maps`` on 1 x 1 blocks vmapped over the chunk (cost
  per pair; any pairs);
* ``tile``: the shard's pairs grouped by blocks of image A, one ``cross_maps`` product per
  block against every image, then the pairs picked out (cost per block; wins when the
  pairs are dense among few images, e.g. 10^6 among 1,000).

Calls are compiled once per process and split over the local devices (a ``Mesh`` with one
``"data"`` axis; W and u replicated). When W of every image exceeds the job's device
budget, :class:`StreamCompute` reads each chunk's rows from the job's files instead
(``gather`` without W on the devices), and :func:`top_k_pairs` streams the gallery in
blocks with a running best per query: memory is flat in the number of distinct images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pairviz_jax import explain

__all__ = ["DATA_AXIS", "Compute", "StreamCompute", "top_k_pairs"]

DATA_AXIS = "data"


def _block_top_k(q: jax.Array, g: jax.Array, q_ids: jax.Array, g_ids: jax.Array, g_ok, k: int):
    scores = jnp.einsum("qe,ge->qg", q, g, precision=jax.lax.Precision.HIGHEST)
    scores = jnp.where(q_ids[:, None] == g_ids[None, :], -jnp.inf, scores)  # never itself
    scores = jnp.where(g_ok[None, :], scores, -jnp.inf)
    return jax.lax.top_k(scores, k)


def _merge_top_k(q, g, q_ids, g_ids, g_ok, best_s, best_i, offset, k: int):
    """The running best of a query block merged with one gallery block's (ties: earlier first)."""
    s, i = _block_top_k(q, g, q_ids, g_ids, g_ok, min(k, g.shape[0]))
    s = jnp.concatenate([best_s, s], axis=1)
    i = jnp.concatenate([best_i, i + offset], axis=1)
    top_s, where = jax.lax.top_k(s, k)
    return top_s, jnp.take_along_axis(i, where, axis=1)


_TOP_K = jax.jit(_block_top_k, static_argnums=5)
_MERGE = jax.jit(_merge_top_k, static_argnums=8)


def top_k_pairs(
    unit_q,
    unit_g,
    k: int,
    *,
    q_ids: np.ndarray | None = None,
    g_ids: np.ndarray | None = None,
    g_ok: np.ndarray | None = None,
    mesh: Mesh | None = None,
    block: int | None = None,
    g_block: int | None = None,
) -> np.ndarray:
    """Each query's k most similar gallery images, computed blockwise on the devices.

    Blocks of queries are split over the mesh's ``data`` axis; the gallery streams
    through in blocks of ``g_block`` images, each query keeping its running best k, so
    device memory is flat in the gallery size (a block's similarities are ~64 MB).

    Args:
      unit_q: unit embeddings of the queries, [Q, E]: an array, or anything with
        ``shape`` and slicing (``job`` reads them from disk block by block).
      unit_g: unit embeddings of the gallery, [G, E] (the same kinds).
      k: neighbours per query (at most G, or G - 1 when queries are in the gallery).
      q_ids: image ids [Q] of the queries; a gallery image with the same id is
        never a neighbour (the query itself). Default: no exclusion.
      g_ids: image ids [G] of the gallery.
      g_ok: bool [G]; False excludes an image (unreadable).
      mesh: the devices (default all local devices).
      block: queries per block (a multiple of the devices; default by memory).
      g_block: gallery images per block (default: ~64 MB of similarities per block).

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
    g_block = min(ng, 65536 if g_block is None else max(int(g_block), 1))
    if block is None:
        block = max(d, min(4096, (16 << 20) // g_block) // d * d)
    block = max(d, block // d * d)
    rep, shard = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    gallery = [(lo, min(lo + g_block, ng)) for lo in range(0, ng, g_block)]
    resident = len(gallery) == 1
    if resident:
        g = jax.device_put(np.asarray(unit_g[0:ng], np.float32), rep)
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
        if resident:
            out[s:e] = np.asarray(_TOP_K(q, g, qi, gi, go, k)[1])[: e - s]
            continue
        best_s = jax.device_put(np.full((block, k), -np.inf, np.float32), shard)
        best_i = jax.device_put(np.zeros((block, k), np.int32), shard)
        for lo, hi in gallery:
            gb = np.zeros((g_block, unit_g.shape[1]), np.float32)  # one shape compiles
            gb[: hi - lo] = unit_g[lo:hi]
            ids = np.full(g_block, -4, np.int32)
            ids[: hi - lo] = np.asarray(g_ids[lo:hi], np.int64)
            okb = np.zeros(g_block, bool)
            okb[: hi - lo] = g_ok[lo:hi]
            best_s, best_i = _MERGE(
                q,
                jax.device_put(gb, rep),
                qi,
                jax.device_put(ids, rep),
                jax.device_put(okb, rep),
                best_s,
                best_i,
                np.int32(lo),
                k,
            )
        out[s:e] = np.asarray(best_i)[: e - s]
    return out


def _rows_kernel(wa: jax.Array, ua: jax.Array, wb: jax.Array, ub: jax.Array, grid):
    """Maps of C pairs from their images' rows: cross_maps on 1 x 1 blocks, vmapped.

    Args:
      wa, wb: W of each pair's images A and B, [C, N, E]; ua, ub: u, [C, E].

    Returns:
      ``(maps_a float16 [C, gh, gw], maps_b float16 [C, gh, gw], score float32 [C])``.
    """
    fa = explain.Folded(w=wa[:, None], unit=ua[:, None], grid=grid)
    fb = explain.Folded(w=wb[:, None], unit=ub[:, None], grid=grid)
    out = jax.vmap(explain.cross_maps)(fa, fb)
    return (
        out["maps_q"][:, 0, 0].astype(jnp.float16),
        out["maps_g"][:, 0, 0].astype(jnp.float16),
        out["score"][:, 0, 0],
    )


def _pairs_kernel(w: jax.Array, unit: jax.Array, idx: jax.Array, grid: tuple[int, int]):
    """Maps of C pairs, W of every image on the device: ``_rows_kernel`` of gathered rows.

    Args:
      w: W of every image, [I, N, E]; unit: u, [I, E]; idx: [C, 2] image indices.
    """
    a, b = idx[:, 0], idx[:, 1]
    return _rows_kernel(w[a], unit[a], w[b], unit[b], grid)


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
_ROWS = jax.jit(_rows_kernel, static_argnums=4)
_TILE = jax.jit(_tile_kernel, static_argnums=(4, 5))


def padded_chunks(pairs: np.ndarray, c: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of ``c`` pairs: (positions [c] in ``pairs``, -1 for padding; pairs int64 [c, 2]),
    the last chunk padded by repeating its first pair (a real pair: no out-of-range image)."""
    for s in range(0, len(pairs), c):
        e = min(s + c, len(pairs))
        idx = np.empty((c, 2), np.int64)
        idx[: e - s] = pairs[s:e]
        idx[e - s :] = pairs[s]
        pos = np.full(c, -1, np.int64)
        pos[: e - s] = np.arange(s, e)
        yield pos, idx


class Compute:
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


class StreamCompute:
    """A gallery larger than the device budget: W read per chunk of pairs, never all held.

    Each call gathers the chunk's distinct images' rows from the job's files on the host
    (``embed.EmbedStore``: memory maps opened per call), puts the pairs' rows on the
    devices split over ``"data"``, and runs ``_rows_kernel``; device and host memory are
    ~2 x C x N x E floats per call whatever the number of distinct images.

    Args:
      store: ``EmbedStore`` (``w(ids)``, ``unit(ids)``).
      grid: the token grid.
      mesh: this process's devices.
      chunk_size: pairs per call C (a multiple of the devices).
    """

    def __init__(self, store, grid, mesh, chunk_size: int):
        self.store, self.grid, self.chunk = store, grid, chunk_size
        self.split = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def calls(self, pairs: np.ndarray) -> Iterator[tuple[np.ndarray, Any]]:
        """Yields (positions [C] in ``pairs``, -1 for padding; device outputs [C, ...])."""
        for pos, idx in padded_chunks(pairs, self.chunk):
            ids, inv = np.unique(idx, return_inverse=True)
            inv = inv.reshape(idx.shape)
            w, unit = self.store.w(ids), self.store.unit(ids)
            rows = [w[inv[:, 0]], unit[inv[:, 0]], w[inv[:, 1]], unit[inv[:, 1]]]
            yield pos, _ROWS(*(jax.device_put(x, self.split) for x in rows), self.grid)
