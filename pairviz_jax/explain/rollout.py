"""Attention rollout (Abnar & Zuidema 2020; paper Section 3.2, eq. 5) and eq. 6.

Convention (the authors' code): each block's head-fused attention gets the
identity added (the residual path) and its rows normalised to sum to one,
``A_l = rownorm(fuse(attn_l) + I)``; the blocks are multiplied from the first
to the last, ``R = A_L ... A_{start}``. ``R[i, j]`` is then how much output
token i draws, through all blocks, on input token j; every row sums to one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pairviz_jax.explain._checks import check_finite, check_rank
from pairviz_jax.models.vit import HEAD_FUSIONS, fuse_heads

Array = jax.Array

CONVENTIONS = ("authors", "transpose")
_HI = jax.lax.Precision.HIGHEST


def rollout(attention: Array, head_fusion: str | None = "mean", start_layer: int = 0) -> Array:
    """Attention rollout R (eq. 5).

    Args:
      attention: softmax attention of every block, [..., L, H, N, N]; or, with
        ``head_fusion=None``, already head-fused, [..., L, N, N].
      head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads,
        or None for pre-fused input.
      start_layer: first block included; ``R = A_{L-1} ... A_{start_layer}``
        (0-based).

    Returns:
      R [..., N, N], float32, rows summing to 1.

    Raises:
      ValueError: on a bad rank, non-square attention, an unknown fusion, an
        out-of-range start_layer or (for concrete inputs) non-finite values.
    """
    if head_fusion is not None and head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS} or None, got {head_fusion!r}")
    layout = "[..., L, H, N, N]" if head_fusion else "[..., L, N, N] (head-fused)"
    check_rank("attention", attention, 4 if head_fusion else 3, layout)
    if attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must be square in its last two axes, got {attention.shape}")
    check_finite("attention", attention)
    a = fuse_heads(attention.astype(jnp.float32), head_fusion, axis=-3)  # [..., L, N, N]
    num_layers = a.shape[-3]
    if not 0 <= start_layer < num_layers:
        raise ValueError(f"start_layer={start_layer} is outside [0, {num_layers}) blocks")
    a = a + jnp.eye(a.shape[-1], dtype=a.dtype)
    a = a / a.sum(-1, keepdims=True)  # rows sum to 1
    r = a[..., start_layer, :, :]
    for layer in range(start_layer + 1, num_layers):
        r = jnp.matmul(a[..., layer, :, :], r, precision=_HI)  # R_l = A_l R_{l-1}
    return r


def redistribution_matrix(r: Array, num_tokens: int, convention: str = "authors") -> Array:
    """The matrix M with ``gamma' = M @ gamma`` on the patch tokens (eq. 6).

    ``R`` may include P leading prefix (class) tokens that carry no similarity
    (gamma is zero there): only its last ``num_tokens`` rows and columns matter.

    Args:
      r: rollout R [..., P + N, P + N].
      num_tokens: N, the number of patch tokens gamma lives on.
      convention: ``"authors"`` (M = R, default) or ``"transpose"`` (M = R^T).

    Returns:
      M [..., N, N].
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    n_r = r.shape[-1]
    if n_r < num_tokens:
        raise ValueError(
            f"rollout covers {n_r} tokens but gamma has {num_tokens}; they come from different "
            "models or images"
        )
    m = r[..., n_r - num_tokens :, n_r - num_tokens :]
    return m if convention == "authors" else jnp.swapaxes(m, -1, -2)


def part_matrix(
    attention: Array | None,
    level: int,
    num_tokens: int,
    convention: str = "authors",
    *,
    start_layer: int = 0,
    head_fusion: str | None = "mean",
) -> Array | None:
    """The redistribution of token contributions at block ``level``'s input onto the patches.

    Contributions that live at the input of block k (k = L: the output
    tokens, the paper's case) are mapped back through the rollout of the
    blocks below, ``R_k = A_{k-1} ... A_{start_layer}`` (eq. 5; the identity
    when k <= start_layer), with ``R_k`` (``authors``) or ``R_k^T``
    (``transpose``), eq. 6.

    Args:
      attention: [..., L, H, N', N'] or head-fused [..., L, N', N'] (then
        ``head_fusion=None``); None for a model without attention.
      level: k, 0 <= k <= L.
      num_tokens: N, the patch tokens (the last N of the N' tokens).
      convention: ``"authors"`` or ``"transpose"``.
      start_layer, head_fusion: as ``rollout``.

    Returns:
      M [..., N, N'] with ``patch_map = M @ gamma`` for gamma over all N'
      tokens, or None without attention (the identity).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if attention is None:
        return None
    n_all = attention.shape[-1]
    if level > start_layer:
        layers = attention[..., :level, :, :, :] if head_fusion else attention[..., :level, :, :]
        r = rollout(layers, head_fusion=head_fusion, start_layer=start_layer)
        m = r if convention == "authors" else jnp.swapaxes(r, -1, -2)
    else:
        lead = attention.shape[: -4 if head_fusion else -3]
        m = jnp.broadcast_to(jnp.eye(n_all, dtype=jnp.float32), (*lead, n_all, n_all))
    return m[..., n_all - num_tokens :, :]


def redistribute(r: Array, gamma: Array, convention: str = "authors") -> Array:
    """Maps token contributions gamma back to input patches (eq. 6).

    Two conventions:

    * ``"authors"`` (default): ``gamma' = R @ gamma``, as the authors' code and
      eq. 6 write it; reproduces the paper's figures. Its total is generally
      not the similarity.
    * ``"transpose"``: ``gamma' = R^T @ gamma``: output token i's contribution
      is spread over the input tokens in proportion to the attention flow
      ``R[i, :]``. As rows of R sum to one, the map sums to
      ``gamma.sum() == score`` (with a kept class token: over all input tokens,
      the class token's share included).

    Args:
      r: rollout [..., P + N, P + N] (P prefix tokens first, possibly 0).
      gamma: [..., N] token contributions (eq. 4).
      convention: ``"authors"`` or ``"transpose"``.

    Returns:
      gamma' [..., N], float32.
    """
    check_rank("R", r, 2, "[..., N, N]")
    check_rank("gamma", gamma, 1, "[..., N]")
    m = redistribution_matrix(r.astype(jnp.float32), gamma.shape[-1], convention)
    return jnp.einsum("...ij,...j->...i", m, gamma.astype(jnp.float32), precision=_HI)
