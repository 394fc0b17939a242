"""Metric-learning losses of the paper's retrieval models, in float32.

The paper (Black et al., WACV 2022, Section 4) trains with ArcFace on Hotels-50k and Google
Landmarks v2 and with Proxy Anchor on Stanford Online Products. Both heads are a matrix of
per-class directions (``class_weights`` / ``proxies``) compared to the embedding by cosine
similarity; both live in the train state next to the model parameters.

Numerical safety: normalisation divides by ``max(||x||, eps)`` and ArcFace's
``sin(theta) = sqrt(1 - cos^2)`` has its gradient cut to 0 where ``cos = +-1``, so gradients
stay finite there and for zero vectors. Every loss is computed in float32 whatever the
model's compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pairviz_jax._util import NORM_EPS

Array = jax.Array


def l2_normalize(x: Array, axis: int = -1, eps: float = NORM_EPS) -> Array:
    """``x / max(||x||, eps)`` along ``axis``, with finite gradients at ``x = 0``."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def cosine_similarity(embeddings: Array, directions: Array) -> Array:
    """Cosines between rows: embeddings [B, E], directions [C, E] -> [B, C]."""
    return l2_normalize(embeddings) @ l2_normalize(directions).T


def arcface_logits(
    embeddings: Array,
    labels: Array,
    class_weights: Array,
    scale: float = 64.0,
    margin: float = 0.5,
    fallback: bool = True,
) -> Array:
    """ArcFace logits: ``s cos(theta_y + m)`` for the true class, ``s cos(theta_j)`` otherwise.

    Args:
      embeddings: [B, E] (any scale; normalised here).
      labels: [B] int class indices in ``[0, C)``.
      class_weights: [C, E] one direction per class (normalised here).
      scale: s, the radius of the hypersphere.
      margin: m, the additive angular margin in radians.
      fallback: where ``theta_y + m > pi`` use ``cos(theta_y) - m sin(m)`` instead of
        ``cos(theta_y + m)``, as the ArcFace authors' code (InsightFace) does. Without it the
        target logit *rises* again past ``theta_y = pi - m``, and training can collapse to
        embeddings opposite every class (target logit ``-cos(m)`` beats the others' ``-1``).
        False is eq. 3 of the paper verbatim (and pytorch-metric-learning's ``ArcFaceLoss``).

    Returns:
      [B, C] float32 logits.
    """
    cos = cosine_similarity(embeddings, class_weights)  # [B, C]
    cos = jnp.clip(cos, -1.0, 1.0)
    # cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m), theta in [0, pi], so sin >= 0.
    # sin = sqrt(1 - cos^2) exactly, with the sqrt's infinite slope at cos = +-1 cut off by a
    # double `where` (its gradient there is 0, not NaN).
    sin2 = 1.0 - cos * cos
    ok = sin2 > 0.0
    sin = jnp.where(ok, jnp.sqrt(jnp.where(ok, sin2, 1.0)), 0.0)
    cos_margin = cos * jnp.cos(margin) - sin * jnp.sin(margin)
    if fallback:
        cos_margin = jnp.where(
            cos > jnp.cos(jnp.pi - margin), cos_margin, cos - margin * jnp.sin(margin)
        )
    onehot = jax.nn.one_hot(labels, cos.shape[-1], dtype=jnp.bool_)
    return scale * jnp.where(onehot, cos_margin, cos)


def arcface_loss(
    embeddings: Array,
    labels: Array,
    class_weights: Array,
    scale: float = 64.0,
    margin: float = 0.5,
    weights: Array | None = None,
    fallback: bool = True,
) -> Array:
    """Additive angular margin loss (Deng et al., CVPR 2019, eq. 3).

    ``L = -1/B sum_i log(e^{s cos(theta_{y_i} + m)} / (e^{s cos(theta_{y_i} + m)}
    + sum_{j != y_i} e^{s cos theta_j}))`` with ``theta_j`` the angle between the embedding and
    class ``j``'s weight. Where ``theta_y + m > pi`` the target logit is
    ``s (cos(theta_y) - m sin(m))`` (``fallback``, the authors' code; see
    :func:`arcface_logits`).

    Args:
      embeddings: [B, E].
      labels: [B] int in ``[0, C)``.
      class_weights: [C, E].
      scale: s.
      margin: m in radians.
      weights: optional [B] per-example weights (e.g. a validity mask); the loss is their
        weighted mean.
      fallback: see :func:`arcface_logits`.

    Returns:
      Scalar float32 loss.
    """
    logits = arcface_logits(embeddings, labels, class_weights, scale, margin, fallback)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if weights is None:
        return nll.mean()
    weights = weights.astype(jnp.float32)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _log1p_sum_exp(z: Array, mask: Array, axis: int) -> Array:
    """``log(1 + sum_{mask} exp(z))`` along ``axis``, stable for large ``z``."""
    zero = jnp.zeros_like(jnp.take(z, jnp.array([0]), axis=axis))
    one = jnp.ones_like(zero)
    z = jnp.where(mask, z, 0.0)  # masked entries contribute 0 via b=0; keep them finite.
    return jax.nn.logsumexp(
        jnp.concatenate([zero, z], axis=axis),
        axis=axis,
        b=jnp.concatenate([one, mask.astype(z.dtype)], axis=axis),
    )


def proxy_anchor_loss(
    embeddings: Array,
    labels: Array,
    proxies: Array,
    alpha: float = 32.0,
    delta: float = 0.1,
    weights: Array | None = None,
) -> Array:
    """Proxy Anchor loss (Kim et al., CVPR 2020, eq. 4).

    ``L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} e^{-alpha (s(x, p) - delta)})
    + 1/|P| sum_{p in P} log(1 + sum_{x in X_p-} e^{alpha (s(x, p) + delta)})``, with ``s`` the
    cosine similarity, ``P`` all proxies, ``P+`` the proxies with at least one positive in the
    batch, ``X_p+`` / ``X_p-`` the batch's embeddings of / not of proxy ``p``'s class.

    Args:
      embeddings: [B, E].
      labels: [B] int in ``[0, C)``.
      proxies: [C, E] one proxy per class.
      alpha: scaling factor alpha.
      delta: margin delta.
      weights: optional [B] 0/1 mask of the examples that take part (padding excluded).

    Returns:
      Scalar float32 loss.
    """
    cos = cosine_similarity(embeddings, proxies)  # [B, C]
    num_classes = proxies.shape[0]
    pos = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)  # [B, C]
    valid = jnp.ones(labels.shape, jnp.bool_) if weights is None else weights > 0
    pos = pos & valid[:, None]
    neg = (~pos) & valid[:, None]
    pos_term = _log1p_sum_exp(-alpha * (cos - delta), pos, axis=0)  # [C]
    neg_term = _log1p_sum_exp(alpha * (cos + delta), neg, axis=0)  # [C]
    with_pos = pos.any(axis=0)
    num_pos = jnp.maximum(with_pos.sum(), 1)
    return jnp.sum(jnp.where(with_pos, pos_term, 0.0)) / num_pos + neg_term.sum() / num_classes
