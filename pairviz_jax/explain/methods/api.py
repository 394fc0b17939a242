"""Any registered method for pairs, for images against given partners, and for galleries.

* ``against`` — B images, each against K partner embeddings: one forward pass per image,
  K batched backward passes (the gallery form every other call builds on).
* ``paired_maps`` — both sides of B pairs, one forward over the 2B images, one backward
  pass per side; the same keys as ``explain.paired_maps``.
* ``cross_maps`` — every query x gallery pair: each image's forward once, one backward
  pass per (image, partner).

Each is one compiled function per (method, options, model, shapes), ``vmap``-ped over the
images and ``lax.map``-ped over partners in chunks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from pairviz_jax.explain._checks import check_finite
from pairviz_jax.explain.maps import _check_model, upsample
from pairviz_jax.explain.methods.base import _HI, check_model, check_options, cotangent, get
from pairviz_jax.explain.similarity import safe_norm

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Images with their model, for ``cross_maps`` with a method other than the paper's.

    Attributes:
      model: a ``ViT`` (or another pairviz_jax model).
      variables: its variables.
      images: [B, H, W, C] normalised.
    """

    model: Any
    variables: Any
    images: Array


def _resolve(method: str, model, options: dict) -> tuple[Any, tuple]:
    m = get(method)
    check_model(m, model)
    opts = check_options(m, options)
    return m, tuple(sorted(opts.items()))


def _unit(x: Array) -> Array:
    x = x.astype(jnp.float32)
    return x / safe_norm(x)[..., None]


def _split(options) -> tuple[dict, str]:
    opts = dict(options)
    return opts, opts.pop("target", "score")


def _against_body(method, options, model, variables, images, partners):
    opts, target = _split(options)
    prep = get(method).prepare(model, variables, images, **opts)
    emb = prep.embedding
    units = _unit(partners)  # [B, K, E]
    maps, total = prep.pullback(cotangent(emb, units, target))
    score = jnp.einsum("be,bke->bk", _unit(emb), units, precision=_HI)
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
    _check_model(model, images)
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


def _paired_body(method, options, model, upsampled, variables, images_a, images_b):
    prepare = get(method).prepare
    opts, target = _split(options)
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
    score = (_unit(ea) * _unit(eb)).sum(-1)
    out = {
        "map_a": map_a,
        "map_b": map_b,
        "score": score,
        "rest_a": score - map_a.sum((-2, -1)),
        "rest_b": score - map_b.sum((-2, -1)),
        "total_a": total_a,
        "total_b": total_b,
    }
    if upsampled:
        out["upsampled_a"] = upsample(map_a, images_a.shape[1:3])
        out["upsampled_b"] = upsample(map_b, images_b.shape[1:3])
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
    """Paired maps of B pairs by any registered method (``explain.paired_maps(method=...)``).

    Args:
      model, variables: the model.
      images_a: [B, H, W, C] normalised; pair b is (images_a[b], images_b[b]).
      images_b: [B, H', W', C].
      method: a registered method.
      upsampled: also return the maps at image resolution.
      **options: the method's options.

    Returns:
      ``map_a``, ``map_b`` [B, gh, gw], ``score`` [B], ``rest_a``/``rest_b`` [B] (the
      score minus the map's sum), ``total_a``/``total_b`` [B] (relevance over every token
      the method credits: the conservation check), and with ``upsampled``
      ``upsampled_a`` [B, H, W], ``upsampled_b``.
    """
    m, opts = _resolve(method, model, options)
    _check_model(model, images_a, "images_a")
    _check_model(model, images_b, "images_b")
    if images_a.shape[0] != images_b.shape[0]:
        raise ValueError(
            f"images_a and images_b must hold the same number of pairs, got {images_a.shape[0]} "
            f"and {images_b.shape[0]}"
        )
    check_finite("images_a", images_a)
    check_finite("images_b", images_b)
    return _paired_fn(m.name, opts, model, upsampled)(variables, images_a, images_b)


@functools.lru_cache(maxsize=16)
def _embed_fn(model):
    return jax.jit(lambda v, x: model.apply(v, x)[0].astype(jnp.float32))


def embed(model, variables, images: Array) -> Array:
    """The embeddings [B, E] (float32) of images [B, H, W, C], one compiled function per model."""
    return _embed_fn(model)(variables, images)


def cross_maps(q: Inputs, g: Inputs, *, method: str, **options) -> dict[str, Array]:
    """Maps of every query x gallery pair by any registered method.

    Each image runs forward once; a pair costs one backward pass per direction (the paper's
    method folds instead: ``explain.cross_maps``). Memory: Q * G maps per direction plus
    ``chunk`` backward passes; call it on blocks of queries for large galleries.

    Args:
      q: ``Inputs`` of Q query images.
      g: ``Inputs`` of G gallery images (same model).
      method: a registered method.
      **options: its options.

    Returns:
      ``maps_q`` [Q, G, gh, gw], ``maps_g`` [Q, G, gh', gw'], ``score`` [Q, G],
      ``rest_q``/``rest_g`` [Q, G] (score minus the map's sum), as ``explain.cross_maps``.
    """
    for name, x in (("queries", q), ("gallery", g)):
        if not isinstance(x, Inputs):
            raise ValueError(
                f"cross_maps(method={method!r}) needs the {name} as explain.methods.Inputs"
                f"(model, variables, images), got {type(x).__name__}"
            )
    emb_q = embed(q.model, q.variables, q.images)
    emb_g = embed(g.model, g.variables, g.images)
    if emb_q.shape[-1] != emb_g.shape[-1]:
        raise ValueError(
            f"query and gallery embeddings differ in size: {emb_q.shape[-1]} vs {emb_g.shape[-1]}"
        )
    nq, ng = emb_q.shape[0], emb_g.shape[0]
    out_q = against(
        q.model,
        q.variables,
        q.images,
        jnp.broadcast_to(emb_g, (nq, *emb_g.shape)),
        method=method,
        **options,
    )
    out_g = against(
        g.model,
        g.variables,
        g.images,
        jnp.broadcast_to(emb_q, (ng, *emb_q.shape)),
        method=method,
        **options,
    )
    return {
        "maps_q": out_q["maps"],
        "maps_g": jnp.swapaxes(out_g["maps"], 0, 1),
        "score": out_q["score"],
        "rest_q": out_q["rest"],
        "rest_g": out_g["rest"].T,
    }
