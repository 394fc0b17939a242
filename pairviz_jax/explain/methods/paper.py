"""The paper's method (eq. 1-6) in the registry's form: one forward, then W c per partner."""

from __future__ import annotations

import jax.numpy as jnp

from pairviz_jax.explain.cross import _fold
from pairviz_jax.explain.maps import _forward
from pairviz_jax.explain.methods.base import _HI, Method, Prepared, register
from pairviz_jax.explain.rollout import CONVENTIONS
from pairviz_jax.explain.similarity import safe_norm


def prepare(
    model, variables, images, *, convention="authors", start_layer=0, head_fusion="mean"
) -> Prepared:
    """Black et al. (WACV 2022): eq. 4 per token, eq. 5-6 back to the patches.

    The map against a partner is ``W c`` with ``W = sum_k M_k v_k`` [N, E] (the
    redistributed token split of ``explain.fold`` before its division by |beta|) and
    ``c = u_partner / |beta|``: the same numbers as ``explain.paired_maps`` (tested).

    Conserves: with ``convention="transpose"`` the map sums to the score minus the share
    on prefix tokens and ``rest`` (exactly); ``"authors"`` (R @ gamma) conserves nothing.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    f = _forward(model, variables, images, head_fusion)
    folded = _fold(f, convention, start_layer, head_fusion)
    w = folded.w * safe_norm(f.embedding)[:, None, None]  # [B, N, E]
    grid = f.grid

    def pullback(cot):
        m = jnp.einsum("bne,bke->bkn", w, cot, precision=_HI)
        return m.reshape(*m.shape[:2], *grid), m.sum(-1)

    return Prepared(f.embedding, pullback)


PAPER = register(
    Method(
        "paper",
        prepare,
        "transpose convention: sum = score - prefix share - rest (exact); authors: nothing",
        dict(convention="authors", start_layer=0, head_fusion="mean"),
        needs_attention=False,
    )
)
