"""The one door to every explanation: pairs, images against partners, galleries.

* ``paired_maps`` — both sides of B pairs: one forward over the 2B images, one backward
  pass per side (or the method's ``paired`` fast path: the paper's eq. 4-6 per pair).
* ``against`` — B images, each against K partner embeddings: one forward pass per image,
  K batched backward passes (what ``pairviz_jax.evaluate`` uses).
* ``cross_maps`` — every query x gallery pair: each image's forward once, one backward
  pass per (image, partner), or, for a method that folds (the paper's), one product per
  block of pairs.

Every call takes ``method=`` (``explain.methods.METHODS``; ``"paper"`` by default) and
the method's options, and returns the same keys whatever the method. Each is one
compiled function per (method, options, model, shapes).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pairviz_jax.explain._checks import check_finite
from pairviz_jax.explain.cross import cross_folded
from pairviz_jax.explain.maps import Inputs, check_model, embed, upsample
from pairviz_jax.explain.methods import base
from pairviz_jax.explain.methods.base import Method, check_options, cotangent, get
from pairviz_jax.explain.similarity import unit

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST


def _resolve(method: str, model, options: dict) -> tuple[Method, tuple]:
    m = get(method)
    if model is not None:
        base.check_model(m, model)
    opts = check_options(m, options)
    if m.check is not None:
        m.check(model, opts)
    return m, tuple(sorted(opts.items()))


def _split(options) -> tuple[dict, str]:
    opts = dict(options)
    return opts, opts.pop("target", "score")


def _against_body(method, options, model, variables, images, partners):
    opts, target = _split(options)
    prep = get(method).prepare(model, variables, images, **opts)
    emb = prep.embedding
    units = unit(partners)  # [B, K, E]
    maps, total = prep.pullback(cotangent(emb, units, target))
    score = jnp.einsum("be,bke->bk", unit(emb), units, precision=_HI)
    return {
        "maps": maps,
        "total": total,
        "score": score,
        "rest": score - maps.sum((-2, -1)),
        "embedding": emb,
    }


@functools.lru_cache(maxsize=64)
def _against_fn(method, options, model):
    return jax.jit(functools.partial(_against_body, method, options, model))


def against(
    model, variables, images: Array, partners: Array, *, method: str = "paper", **options
) -> dict[str, Array]:
    """Maps of B images, each against K partners (a gallery: one forward per image).

    Args:
      model: a ``ViT`` (``paper``/``ig`` also take a CNN).
      variables: its variables.
      images: [B, H, W, C] normalised.
      partners: [B, K, E] the partners' embeddings (any norm), or [B, E] for K = 1.
      method: a registered method (``explain.methods.METHODS``).
      **options: the method's options (``METHODS[method].options``).

    Returns:
      ``maps`` [B, K, gh, gw] (image b's map against partner k), ``score`` [B, K] (the
      cosine), ``total`` [B, K] (the relevance over every token the method credits),
      ``rest`` [B, K] (score minus the map's sum), ``embedding`` [B, E].
    """
    m, opts = _resolve(method, model, options)
    check_model(model, images)
    partners = jnp.asarray(partners)
    squeeze = partners.ndim == 2
    if squeeze:
        partners = partners[:, None]
    if partners.ndim != 3 or partners.shape[0] != images.shape[0]:
        raise ValueError(
            f"partners must be [B, K, E] or [B, E] with B = {images.shape[0]} images, "
            f"got shape {tuple(partners.shape)}"
        )
    check_finite("images", images)
    out = _against_fn(m.name, opts, model)(variables, images, partners)
    if squeeze:
        out = {k: v[:, 0] if k != "embedding" else v for k, v in out.items()}
    return out


def _paired_generic(prepare, opts, target, model, variables, images_a, images_b):
    """Any method's pairs: one forward over both sides, one backward pass per side."""
    b = images_a.shape[0]
    if images_a.shape == images_b.shape:
        both = prepare(model, variables, jnp.concatenate([images_a, images_b]), **opts)
        emb = both.embedding
        ea, eb = emb[:b], emb[b:]
        partner = jnp.concatenate([eb, ea])[:, None]
        maps, total = both.pullback(cotangent(emb, partner, target))
        map_a, map_b = maps[:b, 0], maps[b:, 0]
        total_a, total_b = total[:b, 0], total[b:, 0]
    else:
        pa = prepare(model, variables, images_a, **opts)
        pb = prepare(model, variables, images_b, **opts)
        ea, eb = pa.embedding, pb.embedding
        ma, ta = pa.pullback(cotangent(ea, eb[:, None], target))
        mb, tb = pb.pullback(cotangent(eb, ea[:, None], target))
        map_a, map_b, total_a, total_b = ma[:, 0], mb[:, 0], ta[:, 0], tb[:, 0]
    score = (unit(ea) * unit(eb)).sum(-1)
    return {
        "map_a": map_a,
        "map_b": map_b,
        "score": score,
        "rest_a": score - map_a.sum((-2, -1)),
        "rest_b": score - map_b.sum((-2, -1)),
        "total_a": total_a,
        "total_b": total_b,
    }


def _paired_body(method, options, model, upsampled, variables, images_a, images_b):
    m = get(method)
    opts, target = _split(options)
    if m.paired is not None and target == "score":
        out = m.paired(model, variables, images_a, images_b, **opts)
        out["total_a"] = out["map_a"].sum((-2, -1))
        out["total_b"] = out["map_b"].sum((-2, -1))
    else:
        out = _paired_generic(m.prepare, opts, target, model, variables, images_a, images_b)
    if upsampled:
        out["upsampled_a"] = upsample(out["map_a"], images_a.shape[1:3])
        out["upsampled_b"] = upsample(out["map_b"], images_b.shape[1:3])
    return out


@functools.lru_cache(maxsize=64)
def _paired_fn(method, options, model, upsampled):
    return jax.jit(functools.partial(_paired_body, method, options, model, upsampled))


def paired_maps(
    model,
    variables,
    images_a: Array,
    images_b: Array,
    *,
    method: str = "paper",
    upsampled: bool = True,
    **options,
) -> dict[str, Array]:
    """Paired similarity maps of B pairs by any registered method (the paper's by default).

    One compiled function: one forward pass over both images of every pair, then the
    method's maps of each side against the other. The paper's method (eq. 4 token
    contributions, eq. 5 rollout, eq. 6 redistribution, ``vmap``-ped over the pairs)
    takes ``convention`` (``"authors"``: R @ gamma, the paper's figures;
    ``"transpose"``: R^T @ gamma, maps that sum to the score), ``start_layer`` (first
    block of the rollout) and ``head_fusion`` (``mean``, the paper, ``max`` or ``min``,
    fused inside the model); the others take theirs (``METHODS[method].options``).

    Args:
      model: a ``ViT`` of any pooling (``gap`` is the paper's eq. 1-4; the others use
        the exact split of ``explain.decompose``) or a CNN such as the BiT ResNet (no
        rollout; methods ``paper`` and ``ig``).
      variables: model variables.
      images_a: [B, H, W, C], normalised; pair b is (images_a[b], images_b[b]).
      images_b: [B, H', W', C].
      method: a registered method (``explain.methods.METHODS``).
      upsampled: also return the maps at image resolution.
      **options: the method's options; every method takes ``target`` (``"score"`` or
        ``"cosine"``, ``explain.methods.base.cotangent``).

    Returns:
      dict with ``map_a`` [B, gh, gw], ``map_b`` [B, gh', gw'], ``score`` [B] (the
      cosine similarity), ``rest_a``/``rest_b`` [B], ``total_a``/``total_b`` [B] (the
      relevance over every token the method credits: the conservation check) and, with
      ``upsampled``, ``upsampled_a`` [B, H, W], ``upsampled_b`` [B, H', W']. For the
      paper's method ``rest`` is the share of the score no token is credited with (0
      for ``gap``; with the transpose convention ``map_a.sum() + rest_a`` is the score
      minus the share left on prefix tokens) and ``total`` the map's sum; for the
      others ``rest`` is the score minus the map's sum.
    """
    m, opts = _resolve(method, model, options)
    check_model(model, images_a, "images_a")
    check_model(model, images_b, "images_b")
    if images_a.shape[0] != images_b.shape[0]:
        raise ValueError(
            f"images_a and images_b must hold the same number of pairs, got {images_a.shape[0]} "
            f"and {images_b.shape[0]}"
        )
    check_finite("images_a", images_a)
    check_finite("images_b", images_b)
    return _paired_fn(m.name, opts, model, upsampled)(variables, images_a, images_b)


def _check_side(m: Method, name: str, x, options) -> None:
    if isinstance(x, Inputs):
        base.check_model(m, x.model)
        if m.check is not None:
            m.check(x.model, options)
        return
    if m.fold is not None and isinstance(x, m.per_image):
        if m.check is not None:
            m.check(None, options)
        return
    also = "".join(f" or {t.__name__}" for t in m.per_image)
    raise ValueError(
        f"cross_maps(method={m.name!r}) takes the {name} as explain.Inputs(model, variables, "
        f"images){also}, got {type(x).__name__}"
    )


def cross_maps(queries, gallery, *, method: str = "paper", **options) -> dict[str, Array]:
    """Paired maps for every query x gallery pair, by any registered method.

    Equal to ``paired_maps`` on each pair (tested). A method that folds (the paper's:
    ``explain.fold``) costs one matrix product per block of pairs and no extra forward
    pass; the others embed every image once (the partners' embeddings), then run each
    image forward again with one backward pass per (image, partner) (``against``).
    Memory: Q * G maps per direction; call it on blocks of queries for large galleries.

    Args:
      queries: ``explain.Inputs(model, variables, images)`` of Q images, or the
        method's precomputed per-image object (the paper's: ``explain.Features`` or
        ``explain.Folded``).
      gallery: the same for G gallery images (same model).
      method: a registered method (``explain.methods.METHODS``; ``"paper"``).
      **options: its options, as ``paired_maps``.

    Returns:
      dict with ``maps_q`` [Q, G, gh, gw] (the query's map against each gallery image),
      ``maps_g`` [Q, G, gh', gw'] (each gallery image's map against the query),
      ``score`` [Q, G] (cosine similarities) and ``rest_q``/``rest_g`` [Q, G] (as
      ``rest_a``/``rest_b`` of ``paired_maps``).
    """
    m = get(method)
    opts = check_options(m, options)
    _check_side(m, "queries", queries, opts)
    _check_side(m, "gallery", gallery, opts)
    opts, target = _split(opts)
    if m.fold is not None and target == "score":
        q, g = m.fold(queries, **opts), m.fold(gallery, **opts)
        if q.unit.shape[-1] != g.unit.shape[-1]:
            raise ValueError(
                f"query and gallery embeddings differ in size: {q.unit.shape[-1]} vs "
                f"{g.unit.shape[-1]}"
            )
        return cross_folded(q, g)
    if not (isinstance(queries, Inputs) and isinstance(gallery, Inputs)):
        raise ValueError(
            f"cross_maps(method={method!r}, target={target!r}) needs explain.Inputs for the "
            "queries and the gallery"
        )
    return _cross_generic(queries, gallery, method, dict(opts, target=target))


def _cross_generic(q: Inputs, g: Inputs, method: str, options: dict) -> dict[str, Array]:
    emb_q = embed(q.model, q.variables, q.images)
    emb_g = embed(g.model, g.variables, g.images)
    if emb_q.shape[-1] != emb_g.shape[-1]:
        raise ValueError(
            f"query and gallery embeddings differ in size: {emb_q.shape[-1]} vs {emb_g.shape[-1]}"
        )
    nq, ng = emb_q.shape[0], emb_g.shape[0]
    partners_q = jnp.broadcast_to(emb_g, (nq, *emb_g.shape))  # every query: the whole gallery
    partners_g = jnp.broadcast_to(emb_q, (ng, *emb_q.shape))
    out_q = against(q.model, q.variables, q.images, partners_q, method=method, **options)
    out_g = against(g.model, g.variables, g.images, partners_g, method=method, **options)
    return {
        "maps_q": out_q["maps"],
        "maps_g": jnp.swapaxes(out_g["maps"], 0, 1),
        "score": out_q["score"],
        "rest_q": out_q["rest"],
        "rest_g": out_g["rest"].T,
    }
