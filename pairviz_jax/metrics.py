"""Retrieval metrics: Recall@k and MAP@R, computed in blocks of queries.

Definitions follow pytorch-metric-learning's ``AccuracyCalculator`` (Musgrave et al., "A Metric
Learning Reality Check", ECCV 2020) with cosine similarity:

* the gallery (reference set) defaults to the queries themselves; then each query's own index
  is excluded from its neighbours (a self-match never counts) and queries whose label has no
  other item ("lone queries") are left out of every metric, as in ``AccuracyCalculator``;
* ``R`` of a query is the number of gallery items with its label (excluding itself);
* ``recall@k``: the fraction of queries with at least one item of their label among their ``k``
  nearest neighbours (the metric-learning Recall@k; ``recall@1`` equals
  ``precision_at_1``);
* ``map@r``: ``1/R sum_{i=1}^{R} P(i) rel(i)``, with ``rel(i)`` whether the ``i``-th nearest
  neighbour has the query's label and ``P(i)`` the precision of the first ``i``, averaged
  over queries;
* ``r_precision``: the fraction of the ``R`` nearest neighbours that have the query's label.

Ties in similarity are broken by gallery order: of two equally similar items the one with
the lower index ranks first (``jax.lax.top_k``'s order). Metrics are computed for blocks of
``block_size`` queries against the whole gallery on the default device, so memory is
``O(block_size * (G + max R))``: a 60k x 60k SOP evaluation needs a few hundred MB.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax.losses import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "exclude_self"))
def _block_stats(
    q: jax.Array,
    q_labels: jax.Array,
    q_index: jax.Array,
    g: jax.Array,
    g_labels: jax.Array,
    r: jax.Array,
    *,
    k: int,
    exclude_self: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-query first-hit rank, AP@R and R-precision for one block.

    Args:
      q: [b, E] normalised queries; q_labels [b]; q_index [b] their gallery index (self mode).
      g: [G, E] normalised gallery; g_labels [G].
      r: [b] R of each query (>= 1 for the queries that count).
      k: neighbours retrieved, >= max R and >= the largest recall k.
      exclude_self: drop each query's own gallery index.

    Returns:
      ``first_hit`` [b] (1-based rank of the first same-label neighbour, k + 1 if none in k),
      ``ap_at_r`` [b] and ``r_precision`` [b].
    """
    sim = jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST)  # [b, G]
    if exclude_self:
        sim = jnp.where(jnp.arange(g.shape[0])[None, :] == q_index[:, None], -jnp.inf, sim)
    _, idx = jax.lax.top_k(sim, k)  # [b, k], ties: lower index first
    rel = g_labels[idx] == q_labels[:, None]  # [b, k]
    if exclude_self:
        rel = rel & (idx != q_index[:, None])
    ranks = jnp.arange(1, k + 1)
    first_hit = jnp.min(jnp.where(rel, ranks[None, :], k + 1), axis=1)
    in_r = ranks[None, :] <= r[:, None]  # [b, k]
    rel_r = rel & in_r
    precision_at_i = jnp.cumsum(rel_r, axis=1) / ranks[None, :]
    rf = jnp.maximum(r, 1).astype(jnp.float32)
    ap_at_r = jnp.sum(jnp.where(rel_r, precision_at_i, 0.0), axis=1) / rf
    r_precision = jnp.sum(rel_r, axis=1) / rf
    return first_hit, ap_at_r, r_precision


def retrieval_metrics(
    query_embeddings: np.ndarray | jax.Array,
    query_labels: np.ndarray | jax.Array,
    gallery_embeddings: np.ndarray | jax.Array | None = None,
    gallery_labels: np.ndarray | jax.Array | None = None,
    ks: Sequence[int] = (1, 10, 100),
    block_size: int = 1024,
) -> dict[str, float]:
    """Recall@k, MAP@R and R-precision of cosine-similarity retrieval.

    Args:
      query_embeddings: [Q, E].
      query_labels: [Q] int.
      gallery_embeddings: [G, E]; None means the queries (leave-one-out retrieval).
      gallery_labels: [G] int; given with ``gallery_embeddings``.
      ks: the k of ``recall@k``; ``recall@1`` is always reported. A k larger than the number
        of gallery candidates is clipped to it.
      block_size: queries per block.

    Returns:
      ``{"recall@k": ..., "map@r": ..., "r_precision": ..., "num_queries": ...}`` as Python
      numbers; ``num_queries`` counts the queries that have at least one relevant item.

    Raises:
      ValueError: on mismatched shapes, or when no query has a relevant gallery item.
    """
    q = np.asarray(query_embeddings, dtype=np.float32)
    ql = np.asarray(query_labels).astype(np.int64).reshape(-1)
    same = gallery_embeddings is None
    if same != (gallery_labels is None):
        raise ValueError("give both gallery_embeddings and gallery_labels, or neither")
    g = q if same else np.asarray(gallery_embeddings, dtype=np.float32)
    gl = ql if same else np.asarray(gallery_labels).astype(np.int64).reshape(-1)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be [Q, E] and [G, E], got {q.shape} and {g.shape}")
    if len(ql) != len(q) or len(gl) != len(g):
        raise ValueError(
            f"labels {ql.shape}/{gl.shape} do not match embeddings {q.shape}/{g.shape}"
        )

    # R per query: same-label gallery items, minus the query itself in leave-one-out mode.
    uniq, counts = np.unique(gl, return_counts=True)
    pos = np.searchsorted(uniq, ql).clip(0, max(len(uniq) - 1, 0))
    r = np.where(uniq[pos] == ql, counts[pos], 0) - int(same)
    keep = r > 0
    if not keep.any():
        raise ValueError("no query has a same-label item in the gallery")
    candidates = len(g) - int(same)
    ks = sorted({1, *(int(k) for k in ks)})
    k = int(min(candidates, max(max(ks), int(r.max()))))

    qn = np.asarray(l2_normalize(jnp.asarray(q)))
    gn = jnp.asarray(np.asarray(l2_normalize(jnp.asarray(g))))
    gl_dev = jnp.asarray(gl.astype(np.int32))
    idx = np.nonzero(keep)[0]
    first_hit, ap, rp = [], [], []
    b = int(min(block_size, len(idx)))
    for s in range(0, len(idx), b):
        sel = idx[s : s + b]
        n = len(sel)
        sel_p = np.pad(sel, (0, b - n), mode="edge")  # fixed shape: one compilation
        out = _block_stats(
            jnp.asarray(qn[sel_p]),
            jnp.asarray(ql[sel_p].astype(np.int32)),
            jnp.asarray(sel_p.astype(np.int32)),
            gn,
            gl_dev,
            jnp.asarray(r[sel_p].astype(np.int32)),
            k=k,
            exclude_self=same,
        )
        fh, a, p = (np.asarray(x)[:n] for x in out)
        first_hit.append(fh)
        ap.append(a)
        rp.append(p)
    first_hit = np.concatenate(first_hit)
    result: dict[str, float] = {}
    for kk in ks:
        result[f"recall@{kk}"] = float(np.mean(first_hit <= min(kk, candidates)))
    result["map@r"] = float(np.mean(np.concatenate(ap)))
    result["r_precision"] = float(np.mean(np.concatenate(rp)))
    result["num_queries"] = len(idx)
    return result
