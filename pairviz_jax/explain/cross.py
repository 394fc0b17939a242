"""Maps for many pairs without extra forward passes; class and rollout maps.

The map of image a against image b is linear in b's unit embedding:

    gamma'_a = M_a gamma_a = (M_a alpha_a / (N_a |beta_a|)) . beta_b / |beta_b|
             = W_a u_b,

with M_a the redistribution matrix (R_a or R_a^T, eq. 6), alpha_a the output
tokens and beta_a their mean (eq. 1, 4). ``fold`` computes ``W [N, E]`` and
``u [E]`` once per image; a pair then costs one [N, E] x [E] product, and a
Q x G block of pairs is one matrix product. This is what makes millions of
pairs affordable (``benchmarks/explain.py``).

Every pooling folds the same way: with the embedding split over tokens at
levels k (``Features.contributions``: ``beta = sum_k sum_j v_kj + rest``),
``W = sum_k M_k v_k / |beta|`` and the remainder ``rest / |beta|`` is kept
beside it (``Folded.rest``): a pair's ``rest_a . u_b`` is the share of the
cosine no token is credited with (zero for ``gap``).

The fold is the paper method's fast path: ``explain.cross_maps(method="paper")``
folds every image once and calls ``cross_folded``.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from pairviz_jax.explain.maps import Features
from pairviz_jax.explain.rollout import CONVENTIONS
from pairviz_jax.explain.similarity import safe_norm

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST


@flax.struct.dataclass
class Folded:
    """Per-image matrices for cross maps.

    Attributes:
      w: W, [B, N, E]: the map of this image against a unit embedding u is
        ``W @ u`` (eq. 4 and 6 folded together).
      unit: ``u = beta / |beta|``, [B, E].
      grid: (gh, gw), static.
      rest: [B, E], the embedding's remainder over ``|beta|`` (zeros for ``gap``).
    """

    w: Array
    unit: Array
    grid: tuple[int, int] = flax.struct.field(pytree_node=False)
    rest: Array | None = None

    def __len__(self) -> int:
        return self.unit.shape[0]


def _check_features(f: Features, name: str) -> None:
    if not isinstance(f, Features | Folded):
        raise ValueError(
            f"{name} must be the Features returned by pairviz_jax.explain.features (or Folded), "
            f"got {type(f).__name__}"
        )


def redistributed(f: Features, convention: str, start_layer: int, head_fusion: str) -> Array:
    """``sum_k M_k v_k`` [B, N, E]: the token split redistributed to the patches (eq. 5-6).

    ``W`` of the module doc before its division by |beta| (traceable); a partner's
    cotangent ``c`` [E] then gives the map ``W c``.
    """
    parts, _ = f.contributions()  # {k: [B, N', E]}
    mats = f.part_matrices(convention, start_layer, head_fusion)
    n = f.tokens.shape[-2]
    w = 0.0
    for k, v in parts.items():
        m = mats[k]  # eq. 5-6 for the blocks below level k; None: no rollout (the patch rows)
        w = w + (v[:, -n:] if m is None else jnp.einsum("bnt,bte->bne", m, v, precision=_HI))
    return w


@functools.partial(jax.jit, static_argnames=("convention", "start_layer", "head_fusion"))
def _fold(f: Features, convention: str, start_layer: int, head_fusion: str) -> Folded:
    _, rest = f.contributions()  # [B, E]
    beta = f.embedding.astype(jnp.float32)
    norm = safe_norm(beta)[:, None]
    w = redistributed(f, convention, start_layer, head_fusion)
    return Folded(w=w / norm[..., None], unit=beta / norm, grid=f.grid, rest=rest / norm)


def fold(
    f: Features | Folded,
    *,
    convention: str = "authors",
    start_layer: int = 0,
    head_fusion: str = "mean",
) -> Folded:
    """Folds one image's rollout and tokens into ``W`` and ``u`` (see module doc).

    Args:
      f: ``Features`` of B images (or an already ``Folded``, returned as is).
      convention: ``"authors"`` or ``"transpose"`` (see ``redistribute``).
      start_layer: first block of the rollout.
      head_fusion: fusion for attention kept with all heads.

    Returns:
      ``Folded`` with ``w`` [B, N, E] and ``unit`` [B, E].
    """
    _check_features(f, "features")
    if isinstance(f, Folded):
        return f
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return _fold(f, convention, start_layer, head_fusion)


@jax.jit
def cross_folded(q: Folded, g: Folded) -> dict[str, Array]:
    """Maps of every query x gallery pair from folded images (one product per block).

    Returns ``maps_q`` [Q, G, gh, gw], ``maps_g`` [Q, G, gh', gw'], ``score`` [Q, G] and
    ``rest_q``/``rest_g`` [Q, G] (see ``explain.cross_maps``).
    """
    score = jnp.einsum("qe,ge->qg", q.unit, g.unit, precision=_HI)
    maps_q = jnp.einsum("qne,ge->qgn", q.w, g.unit, precision=_HI)
    maps_g = jnp.einsum("gne,qe->qgn", g.w, q.unit, precision=_HI)
    nq, ng = score.shape
    out = {
        "maps_q": maps_q.reshape(nq, ng, *q.grid),
        "maps_g": maps_g.reshape(nq, ng, *g.grid),
        "score": score,
    }
    zeros = jnp.zeros_like(score)
    rest_q = zeros if q.rest is None else jnp.einsum("qe,ge->qg", q.rest, g.unit, precision=_HI)
    rest_g = zeros if g.rest is None else jnp.einsum("ge,qe->qg", g.rest, q.unit, precision=_HI)
    out["rest_q"], out["rest_g"] = rest_q, rest_g
    return out


@jax.jit
def _class_map(q: Folded, g: Folded, members: Array) -> Array:
    # Sum over members of W_q u_g = W_q (sum of member unit embeddings).
    summed = jnp.einsum("qg,ge->qe", members, g.unit, precision=_HI)
    maps = jnp.einsum("qne,qe->qn", q.w, summed, precision=_HI)
    return maps.reshape(maps.shape[0], *q.grid)


def class_map(
    features_q: Features | Folded,
    features_g: Features | Folded,
    members: Array | None = None,
    **kw,
) -> Array:
    """Class similarity maps (Section 4.2): a query's maps summed over a class.

    ``sum_g W_q u_g = W_q sum_g u_g``: the sum of maps over any number of
    gallery images costs one product per query.

    Args:
      features_q: ``Features``/``Folded`` of Q queries.
      features_g: ``Features``/``Folded`` of G gallery images.
      members: which gallery images belong to the class, bool or float weights
        [G] (same for every query) or [Q, G]; default all G.
      **kw: convention, start_layer, head_fusion as ``cross_maps``.

    Returns:
      [Q, gh, gw] class similarity maps of the queries.
    """
    q = fold(features_q, **kw)
    g = fold(features_g, **kw)
    nq, ng = q.unit.shape[0], g.unit.shape[0]
    if members is None:
        members = jnp.ones((ng,), jnp.float32)
    members = jnp.asarray(members, jnp.float32)
    if members.shape not in ((ng,), (nq, ng)):
        raise ValueError(f"members must be [G]=[{ng}] or [Q, G]=[{nq}, {ng}], got {members.shape}")
    members = jnp.broadcast_to(members, (nq, ng))
    return _class_map(q, g, members)


@functools.partial(jax.jit, static_argnames=("start_layer", "head_fusion"))
def _rollout_map(f: Features, start_layer: int, head_fusion: str) -> Array:
    r = f.rollout(start_layer, head_fusion)  # [B, P + N, P + N]
    n = f.tokens.shape[1]
    p = r.shape[-1] - n
    if p > 0:
        m = r[:, 0, p:]  # the class token's row
    else:
        m = r.mean(axis=-2)  # no class token: mean over output tokens
    return m.reshape(m.shape[0], *f.grid)


def rollout_map(f: Features, *, start_layer: int = 0, head_fusion: str = "mean") -> Array:
    """Output-agnostic rollout map (Fig. 8): how much the output draws on each patch.

    With a kept class token this is its row of R (Abnar & Zuidema); a model
    without one (the paper's) has no single output token, so the map is the
    mean of R's rows over all output tokens, i.e. the attention flow into
    each input patch averaged over the outputs.

    Args:
      f: ``Features`` of a model with attention.
      start_layer, head_fusion: as ``rollout``.

    Returns:
      [B, gh, gw].
    """
    if not isinstance(f, Features):
        raise ValueError(f"rollout_map needs Features, got {type(f).__name__}")
    if f.attention is None:
        raise ValueError("rollout_map needs a model with attention (a ViT); this model has none")
    return _rollout_map(f, start_layer, head_fusion)
