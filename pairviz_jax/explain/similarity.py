"""Decomposing the cosine similarity over output tokens (paper, Section 3.1, eq. 1-4).

For an image with output tokens ``alpha [N, D]`` (N = K*K, projected when the
model has a projection), the embedding is their mean ``beta = mean(alpha)``
(eq. 1). The cosine of two embeddings (eq. 2) is linear in each image's tokens,
so it splits exactly into one contribution per token (eq. 3, 4)::

    gamma^{i|j}_n = alpha^i_n . beta^j / (N_i |beta^i| |beta^j|),
    sum_n gamma^{i|j}_n = s(beta^i, beta^j).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pairviz_jax._util import NORM_EPS
from pairviz_jax.explain._checks import check_finite, check_rank

Array = jax.Array


def safe_norm(x: Array, axis: int = -1) -> Array:
    """Euclidean norm, floored at ``NORM_EPS`` (an all-zero embedding: score 0, no NaN)."""
    return jnp.maximum(jnp.linalg.norm(x, axis=axis), NORM_EPS)


def unit(x: Array, axis: int = -1) -> Array:
    """``x / |x|`` along ``axis`` in float32, over ``safe_norm`` (zero stays zero)."""
    x = x.astype(jnp.float32)
    return x / jnp.expand_dims(safe_norm(x, axis), axis)


def cosine(beta_a: Array, beta_b: Array) -> Array:
    """Cosine similarity s(beta_a, beta_b) (eq. 2); [..., D] x [..., D] -> [...]."""
    beta_a = beta_a.astype(jnp.float32)
    beta_b = beta_b.astype(jnp.float32)
    return (beta_a * beta_b).sum(-1) / (safe_norm(beta_a) * safe_norm(beta_b))


def token_similarity(tokens_a: Array, tokens_b: Array) -> tuple[Array, Array, Array]:
    """Per-token contributions to the cosine similarity of two images (eq. 1-4).

    Args:
      tokens_a: alpha^a, [..., N_a, D], the (projected) output tokens of image a.
      tokens_b: alpha^b, [..., N_b, D]; leading axes broadcast with ``tokens_a``.

    Returns:
      ``(gamma_a [..., N_a], gamma_b [..., N_b], score [...])`` in float32, with
      ``gamma_a.sum(-1) == gamma_b.sum(-1) == score == cosine(beta_a, beta_b)``.

    Raises:
      ValueError: on a rank below 2, mismatched D, or (for concrete inputs)
        non-finite values.
    """
    check_rank("tokens_a", tokens_a, 2, "[..., N, D]")
    check_rank("tokens_b", tokens_b, 2, "[..., N, D]")
    if tokens_a.shape[-1] != tokens_b.shape[-1]:
        raise ValueError(
            f"tokens_a and tokens_b must have the same width D, got {tokens_a.shape} "
            f"and {tokens_b.shape}"
        )
    check_finite("tokens_a", tokens_a)
    check_finite("tokens_b", tokens_b)
    alpha_a = tokens_a.astype(jnp.float32)
    alpha_b = tokens_b.astype(jnp.float32)
    n_a, n_b = alpha_a.shape[-2], alpha_b.shape[-2]
    beta_a = alpha_a.mean(-2)  # eq. 1
    beta_b = alpha_b.mean(-2)
    norm_a, norm_b = safe_norm(beta_a), safe_norm(beta_b)
    denom = (norm_a * norm_b)[..., None]
    gamma_a = jnp.einsum("...nd,...d->...n", alpha_a, beta_b) / (n_a * denom)  # eq. 4
    gamma_b = jnp.einsum("...nd,...d->...n", alpha_b, beta_a) / (n_b * denom)
    score = (beta_a * beta_b).sum(-1) / (norm_a * norm_b)  # eq. 2
    return gamma_a, gamma_b, score
