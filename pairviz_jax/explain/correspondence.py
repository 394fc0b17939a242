"""Which part of A matches which part of B: the cosine split over patch pairs.

A paired map says *where* B is similar to A, not *to what* in A. The cosine
splits over token **pairs** as well as over tokens: with beta the mean of the
N output tokens alpha (eq. 1),

    s = sum_ij <alpha^a_i, alpha^b_j> / (N_a N_b |beta^a| |beta^b|) = sum_ij P_ij,

and the row sums of P are gamma^a, its column sums gamma^b (eq. 4). Through
the redistribution matrices M (eq. 6) of both images,

    C = M_a P M_b^T = W_a W_b^T,   W = M alpha / (N |beta|)  (``fold``),

a patch-to-patch map. ``fold`` gives W [N, E] and the unit embedding
u = beta / |beta| [E] of each image, so a Q x G block of pairs is one einsum
over folded images, with no forward pass beyond the one per image.

**The remainder.** Let r = u - sum_i W_i be the part of an image's unit
embedding that W does not assign to any patch. Then, exactly and for every
convention,

    u_a . u_b = sum_ij C_ij + sum_i rest_a_i + sum_j rest_b_j + rest,
    rest_a = W_a r_b,  rest_b = W_b r_a,  rest = r_a . r_b,

and the marginals are the paired maps of the same convention:
``C.sum(-1) + rest_a == W_a u_b == map_a``, ``C.sum(-2) + rest_b == map_b``.

* ``convention="transpose"`` (M = R^T, rows of R summing to 1): the columns of
  W sum to u, so r = 0 for a mean-pooled model without kept prefix tokens: C
  alone sums to the cosine and its marginals are the paired maps. This is the
  default here.
* ``convention="authors"`` (M = R): r is generally not small, because the
  columns of R do not sum to 1. No patch-only matrix can do better: the two
  authors' maps of a pair generally have different totals, and a matrix's row
  sums and column sums add up to the same total. The decomposition above is
  still exact, with the remainder returned beside C (not an approximation).
* ``level="token"`` is P itself (M = I; no rollout): r = 0.
* A kept class token (or any share of the embedding ``fold`` does not put on
  the patches, as other poolings will have) lands in r and so in the rest
  terms; nothing here depends on how W was built, only on ``W_a u_b`` being
  the map and ``u_a . u_b`` the score.

**Second order** (``method="bilrp"``, ``explain.methods.bilrp``): W comes from the
conservative relevance of every embedding coordinate through the whole network instead of
the rollout (BiLRP); the same algebra holds, its marginals are the ``conservative`` maps
and r holds the biases' and the prefix tokens' share.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from pairviz_jax.explain.cross import Folded, fold
from pairviz_jax.explain.maps import Features, Inputs
from pairviz_jax.explain.methods.base import METHODS, check_options, get

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST

LEVELS = ("patch", "token")


def pair_correspondence(w_a: Array, u_a: Array, w_b: Array, u_b: Array) -> dict[str, Array]:
    """The cosine of one pair split over patch pairs (see the module doc).

    No batch axes: use ``jax.vmap`` for batches (``correspondence`` does).

    Args:
      w_a: W of image a, [N_a, E] (``Folded.w`` of one image).
      u_a: its unit embedding, [E].
      w_b: W of image b, [N_b, E].
      u_b: [E].

    Returns:
      dict of float32 arrays: ``corr`` [N_a, N_b] (C = W_a W_b^T), ``map_a``
      [N_a] (W_a u_b, a's paired map, eq. 6), ``map_b`` [N_b], ``rest_a``
      [N_a] (W_a r_b), ``rest_b`` [N_b] (W_b r_a), ``rest`` [] (r_a . r_b) and
      ``score`` [] (u_a . u_b, the cosine, eq. 2).
    """
    w_a = w_a.astype(jnp.float32)
    w_b = w_b.astype(jnp.float32)
    u_a = u_a.astype(jnp.float32)
    u_b = u_b.astype(jnp.float32)
    r_a = u_a - w_a.sum(0)  # what W_a leaves off the patches
    r_b = u_b - w_b.sum(0)
    return {
        "corr": jnp.einsum("ie,je->ij", w_a, w_b, precision=_HI),
        "map_a": jnp.einsum("ie,e->i", w_a, u_b, precision=_HI),
        "map_b": jnp.einsum("je,e->j", w_b, u_a, precision=_HI),
        "rest_a": jnp.einsum("ie,e->i", w_a, r_b, precision=_HI),
        "rest_b": jnp.einsum("je,e->j", w_b, r_a, precision=_HI),
        "rest": jnp.dot(r_a, r_b, precision=_HI),
        "score": jnp.dot(u_a, u_b, precision=_HI),
    }


def _on_grids(out: dict[str, Array], grid_a, grid_b) -> dict[str, Array]:
    lead = out["score"].shape
    out["map_a"] = out["map_a"].reshape(*lead, *grid_a)
    out["map_b"] = out["map_b"].reshape(*lead, *grid_b)
    return out


@jax.jit
def _block(a: Folded, b: Folded) -> dict[str, Array]:
    per_g = jax.vmap(pair_correspondence, in_axes=(None, None, 0, 0))
    out = jax.vmap(per_g, in_axes=(0, 0, None, None))(a.w, a.unit, b.w, b.unit)
    return _on_grids(out, a.grid, b.grid)


@jax.jit
def _aligned(a: Folded, b: Folded) -> dict[str, Array]:
    out = jax.vmap(pair_correspondence)(a.w, a.unit, b.w, b.unit)
    return _on_grids(out, a.grid, b.grid)


def _folded(f: Features | Folded, name: str, level: str, kw: dict) -> Folded:
    if level == "token":
        if isinstance(f, Folded):
            raise ValueError(
                f"{name}: level='token' needs the Features of explain.features (a Folded "
                "image already holds its rollout)"
            )
        if isinstance(f, Features):  # M = I: eq. 4 with no redistribution
            f = dataclasses.replace(f, attention=None, head_fusion=None)
    return fold(f, **kw)


def _method_fold(x, name: str, method: str, level: str, options: dict) -> Folded:
    """A non-paper method's ``Folded`` (``Method.fold``) of ``Inputs`` or its own object."""
    m = get(method)
    if m.fold is None:
        folding = ", ".join(k for k, v in METHODS.items() if v.fold is not None)
        raise ValueError(
            f"method {method!r} does not fold per image; correspondence takes {folding}"
        )
    if level != "patch":
        raise ValueError(f"level={level!r} is the paper's; method {method!r} gives level='patch'")
    if not isinstance(x, (Inputs, *m.per_image)):
        raise ValueError(
            f"{name}: method {method!r} takes explain.Inputs(model, variables, images) or its "
            f"Folded, got {type(x).__name__}"
        )
    opts = check_options(m, options)
    opts.pop("target")
    if m.check is not None:
        m.check(x.model if isinstance(x, Inputs) else None, opts)
    return m.fold(x, **opts)


def correspondence(
    features_a: Features | Folded | Inputs,
    features_b: Features | Folded | Inputs,
    *,
    aligned: bool = False,
    level: str = "patch",
    convention: str = "transpose",
    start_layer: int = 0,
    head_fusion: str = "mean",
    method: str = "paper",
    **options,
) -> dict[str, Array]:
    """Patch-to-patch correspondence C (or token-level P) for batches of pairs.

    ``C[i, j]`` is the share of the cosine that patch i of a and patch j of b
    account for together; row i of C is what a's patch i matches in b.
    Memory: one float per patch pair (ViT-B/16 at 256 px: 256 KB per pair).

    Args:
      features_a: ``Features`` (or ``Folded``) of A images [A].
      features_b: ``Features`` (or ``Folded``) of B images [B].
      aligned: False: every a x b pair, leading axes [A, B]; True: pairs
        (a[k], b[k]), leading axis [A] (needs A == B).
      level: ``"patch"``: C = M_a P M_b^T through the rollout (eq. 5, 6);
        ``"token"``: P over the output tokens (eq. 4 only; needs ``Features``).
      convention: ``"transpose"`` (default: C's marginals are the paired maps)
        or ``"authors"`` (exact only with the rest terms; see the module doc).
        Ignored for ``Folded`` input, which was folded with its own.
      start_layer: first block of the rollout.
      head_fusion: fusion for attention kept with all heads.
      method: ``"paper"`` (C through the rollout; the options above) or a method that
        folds per image, ``"bilrp"`` (second order through the whole network; its
        inputs ``explain.Inputs`` or its ``Folded``, its options ``layer``, ``chunk``).
      **options: the method's options (not the paper's).

    Returns:
      dict of float32 arrays, with leading axes L = [A, B] (or [A] aligned):
      ``corr`` [L..., N_a, N_b] (tokens in row-major grid order), ``map_a``
      [L..., gh_a, gw_a] and ``map_b`` [L..., gh_b, gw_b] (the paired maps of the
      convention, equal to ``cross_maps``), ``rest_a`` [L..., N_a], ``rest_b``
      [L..., N_b], ``rest`` [L...] and ``score`` [L...] (the cosine). Exactly:
      ``corr.sum(-1) + rest_a`` is ``map_a`` flattened, ``corr.sum(-2) +
      rest_b`` is ``map_b``, and ``corr.sum((-2, -1)) + rest_a.sum(-1) +
      rest_b.sum(-1) + rest`` is ``score``.

    Raises:
      ValueError: unknown level, embeddings of different sizes, aligned
        batches of different lengths, or level='token' on ``Folded`` input.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if method != "paper":
        a = _method_fold(features_a, "features_a", method, level, options)
        b = _method_fold(features_b, "features_b", method, level, options)
    elif options:
        raise ValueError(f"method 'paper' takes no option {', '.join(sorted(options))} here")
    else:
        kw = dict(convention=convention, start_layer=start_layer, head_fusion=head_fusion)
        a = _folded(features_a, "features_a", level, kw)
        b = _folded(features_b, "features_b", level, kw)
    if a.unit.shape[-1] != b.unit.shape[-1]:
        raise ValueError(
            f"features_a and features_b embed to different sizes: {a.unit.shape[-1]} vs "
            f"{b.unit.shape[-1]}"
        )
    if aligned:
        if len(a) != len(b):
            raise ValueError(
                f"aligned pairs need as many images in features_a as in features_b, got "
                f"{len(a)} and {len(b)}"
            )
        return _aligned(a, b)
    return _block(a, b)
