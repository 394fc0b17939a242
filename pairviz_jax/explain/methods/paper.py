"""The paper's method (Black et al., WACV 2022, eq. 1-6) in the registry, with its fast paths.

* ``prepare`` (every method has one): one forward, then the map against a partner is
  ``W c`` with ``W = sum_k M_k v_k`` [N, E] (``explain.cross.redistributed``) and
  ``c = u_partner / |beta|``.
* ``paired`` (fast path for B pairs): eq. 4 per part, eq. 6 per level, the cosine, per
  pair (``vmap``), with no partner matrix built.
* ``fold`` (fast path for galleries): ``explain.fold`` once per image, then every pair
  is one product (``explain.cross.cross_folded``).

All three give the same maps to float rounding (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pairviz_jax.explain.cross import Folded, fold, redistributed
from pairviz_jax.explain.maps import Features, Inputs, features, forward
from pairviz_jax.explain.methods.base import Method, Prepared, register
from pairviz_jax.explain.rollout import CONVENTIONS
from pairviz_jax.explain.similarity import cosine, safe_norm, unit
from pairviz_jax.models.layers import HEAD_FUSIONS

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST
OPTIONS = dict(convention="authors", start_layer=0, head_fusion="mean")


def check(model, options) -> None:
    """ValueError for an unknown head fusion or convention, or a start layer out of range."""
    if options["head_fusion"] not in HEAD_FUSIONS:
        raise ValueError(
            f"head_fusion must be one of {HEAD_FUSIONS}, got {options['head_fusion']!r}"
        )
    if options["convention"] not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {options['convention']!r}")
    depth = getattr(model, "depth", None)
    start = options["start_layer"]
    if depth is not None and not 0 <= start < depth:
        raise ValueError(f"start_layer={start} is outside [0, {depth}) blocks")


def prepare(
    model, variables, images, *, convention="authors", start_layer=0, head_fusion="mean"
) -> Prepared:
    """Eq. 4 per token, eq. 5-6 back to the patches, against any cotangent.

    Conserves: with ``convention="transpose"`` the map sums to the score minus the share
    on prefix tokens and ``rest`` (exactly); ``"authors"`` (R @ gamma) conserves nothing.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    f = forward(model, variables, images, head_fusion)
    w = redistributed(f, convention, start_layer, head_fusion)  # [B, N, E]
    grid = f.grid

    def pullback(cot):
        m = jnp.einsum("bne,bke->bkn", w, cot, precision=_HI)
        return m.reshape(*m.shape[:2], *grid), m.sum(-1)

    return Prepared(f.embedding, pullback)


def _side_map(parts, rest, emb, mats, unit_partner, grid) -> tuple[Array, Array]:
    """One image against a partner's unit embedding: (map [gh, gw], unassigned share [])."""
    norm = safe_norm(emb)
    total = 0.0
    for k, v in parts.items():
        gamma = jnp.einsum("te,e->t", v, unit_partner, precision=_HI) / norm  # eq. 4
        m = mats[k]
        total = total + (gamma if m is None else jnp.einsum("nt,t->n", m, gamma, precision=_HI))
    return total.reshape(grid), jnp.dot(rest, unit_partner, precision=_HI) / norm


def _pair_maps(fa: Features, fb: Features, mats_a, mats_b) -> dict[str, Array]:
    """One pair (unbatched Features): eq. 4 per part, eq. 6 per level, the cosine."""
    ua, ub = unit(fa.embedding), unit(fb.embedding)
    map_a, rest_a = _side_map(fa.parts, fa.rest, fa.embedding, mats_a, ub, fa.grid)
    map_b, rest_b = _side_map(fb.parts, fb.rest, fb.embedding, mats_b, ua, fb.grid)
    score = cosine(fa.embedding, fb.embedding)  # eq. 2
    return {"map_a": map_a, "map_b": map_b, "score": score, "rest_a": rest_a, "rest_b": rest_b}


def paired(
    model, variables, images_a, images_b, *, convention, start_layer, head_fusion
) -> dict[str, Array]:
    """Both sides of B pairs: one forward over the 2B images, the pair math ``vmap``-ped.

    Returns ``map_a`` [B, gh, gw], ``map_b``, ``score`` [B] and ``rest_a``/``rest_b`` [B]
    (the share of the score no token is credited with: 0 for ``gap``).
    """
    if images_a.shape == images_b.shape:
        both = forward(model, variables, jnp.concatenate([images_a, images_b]), head_fusion)
        b = images_a.shape[0]
        fa, fb = both.slice(0, b), both.slice(b, 2 * b)
    else:
        fa = forward(model, variables, images_a, head_fusion)
        fb = forward(model, variables, images_b, head_fusion)
    mats_a = fa.part_matrices(convention, start_layer)
    mats_b = fb.part_matrices(convention, start_layer)
    return jax.vmap(_pair_maps)(fa.with_parts(), fb.with_parts(), mats_a, mats_b)


def fold_any(x: Inputs | Features | Folded, *, convention, start_layer, head_fusion) -> Folded:
    """``Folded`` of images (``Inputs``), of their ``Features``, or an already ``Folded``."""
    if isinstance(x, Inputs):
        x = features(x.model, x.variables, x.images, head_fusion=head_fusion)
    return fold(x, convention=convention, start_layer=start_layer, head_fusion=head_fusion)


PAPER = register(
    Method(
        "paper",
        prepare,
        "transpose convention: sum = score - prefix share - rest (exact); authors: nothing",
        OPTIONS,
        needs_attention=False,
        check=check,
        paired=paired,
        fold=fold_any,
        per_image=(Features, Folded),
    )
)
