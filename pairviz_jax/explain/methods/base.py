"""What every explanation method shares: the registry, the explained quantity, helpers.

A method explains an image x's side of a pair: how x's tokens make up its similarity to
a partner p. Every method explains the same quantity,

    f_p(x) = beta(x) . c,    c = u_p / |beta(x)|,                                   (*)

whose value is the cosine s(beta(x), beta(p)) (eq. 2) but whose gradient holds x's norm
|beta(x)| at its value, as eq. 4 does (gamma_j = alpha_j . u_p / |beta|). Without that,
gradient x input of the cosine, which is unchanged when beta(x) is scaled, sums to zero
for every layer where the network is positively homogeneous (Euler's theorem), and the
conservative method would conserve zero instead of the score.

Because (*) is linear in the partner's unit embedding u_p, ``c`` is the cotangent of a
single vector-Jacobian product through the embedding: one forward pass of x serves any
number of partners (``Prepared.pullback`` takes [B, K, E] cotangents, K partners per
image), which is what makes galleries (``cross_maps``) affordable.

A method is registered as ``Method(name, prepare, conserves, ...)``. ``prepare(model,
variables, images, **options)`` runs inside ``jit`` and returns a ``Prepared``: the
embedding [B, E] and a pullback from cotangents [B, K, E] to relevance maps
[B, K, gh, gw] on the patch tokens and their total over every token the method credits
([B, K]; for the gradient methods this includes class/register tokens). A method may
also declare fast paths that ``explain.paired_maps`` / ``cross_maps`` take when the
target is ``"score"``: ``paired`` (both sides of B pairs at once) and ``fold`` (one
per-image object, ``explain.Folded``, from which any pair is one product: the paper's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from pairviz_jax.explain.similarity import safe_norm, unit

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST

Pullback = Callable[[Array], tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One forward pass of B images, ready for any number of partners.

    Attributes:
      embedding: beta, [B, E] float32.
      pullback: cotangents c [B, K, E] (``c = u_partner / |beta|``, see the module doc) ->
        ``(maps [B, K, gh, gw], total [B, K])``.
    """

    embedding: Array
    pullback: Pullback


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered explanation method.

    Attributes:
      name: the registry key (``method=`` in ``paired_maps``, ``cross_maps``, evaluate).
      prepare: ``(model, variables, images, **options) -> Prepared`` (traceable).
      conserves: one line on what its map sums to (measured in ``benchmarks/methods.py``).
      options: the accepted options and their defaults.
      needs_attention: only for models with attention (ViT).
      check: ``(model, options) -> None``, a clear ValueError for bad options before
        anything is traced (optional).
      paired: fast path for B pairs, ``(model, variables, images_a, images_b, **options)
        -> {map_a, map_b, score, rest_a, rest_b}`` (traceable; optional).
      fold: fast path for galleries, ``(x, **options) -> explain.Folded`` for x an
        ``explain.Inputs`` or the method's own per-image object (``per_image``);
        optional.
      per_image: the types ``fold`` accepts besides ``Inputs`` (the paper's:
        ``Features`` and ``Folded``).
    """

    name: str
    prepare: Callable[..., Prepared]
    conserves: str
    options: Mapping[str, Any]
    needs_attention: bool = True
    check: Callable[[Any, Mapping[str, Any]], None] | None = None
    paired: Callable[..., dict[str, Array]] | None = None
    fold: Callable[..., Any] | None = None
    per_image: tuple[type, ...] = ()


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds ``method`` to ``METHODS`` (its name must be new)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    """The method called ``name``; ValueError listing the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


# Options every method takes (handled by ``api``, not by ``prepare``).
COMMON_OPTIONS = {"target": "score"}
TARGETS = ("score", "cosine")


def check_options(method: Method, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the method's defaults filled in; ValueError on an unknown one."""
    accepted = {**COMMON_OPTIONS, **method.options}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"method {method.name!r} takes no option {', '.join(unknown)} "
            f"(accepted: {', '.join(accepted)})"
        )
    out = {**accepted, **options}
    if out["target"] not in TARGETS:
        raise ValueError(f"target={out['target']!r}: expected one of {TARGETS}")
    return out


def cotangent(embedding: Array, partners: Array, target: str = "score") -> Array:
    """The cotangent of the explained quantity for images [B, E] against partners [B, K, E].

    ``"score"`` (every method's default): f_p = beta . u_p / |beta| with |beta| held (the
    module doc), cotangent ``u_p / |beta|``; the maps can sum to the cosine.
    ``"cosine"``: the cosine itself, whose gradient also moves |beta|: cotangent
    ``(u_p - s u) / |beta|`` with u = beta / |beta| and s the cosine, i.e. the ``score``
    map minus s times the image's map against itself (its partner-agnostic part). Its
    maps sum to 0 wherever the network is positively homogeneous; they show what in the
    image makes it closer to *this* partner than to itself.
    """
    norm = safe_norm(embedding)
    u = embedding / norm[:, None]
    up = unit(partners)
    if target == "cosine":
        s = jnp.einsum("be,bke->bk", u, up, precision=_HI)
        up = up - s[..., None] * u[:, None]
    elif target != "score":
        raise ValueError(f"target={target!r}: expected one of {TARGETS}")
    return up / norm[:, None, None]


def check_model(method: Method, model) -> None:
    """A clear error when ``method`` needs what ``model`` lacks."""
    if method.needs_attention and not getattr(model, "has_attention", False):
        raise ValueError(
            f"method {method.name!r} needs a ViT (attention and block hooks); "
            f"{type(model).__name__} has none: use method='paper' or 'ig'"
        )


def patch_rows(relevance: Array, grid: tuple[int, int]) -> Array:
    """The last gh * gw tokens of [..., N'] as [..., gh, gw] (prefix tokens come first)."""
    n = grid[0] * grid[1]
    return relevance[..., relevance.shape[-1] - n :].reshape(*relevance.shape[:-1], *grid)


def over_cotangents(fn: Callable[[Array], Any], cot: Array, chunk: int | None) -> Any:
    """Maps ``fn`` over the partners of cotangents [B, K, E]; outputs get axis 1 = K.

    ``fn`` takes [B, E]; ``chunk`` partners at a time (``lax.map`` with a batch size:
    memory of ``chunk`` backward passes, not K).
    """
    k = cot.shape[1]
    out = jax.lax.map(fn, jnp.swapaxes(cot, 0, 1), batch_size=min(chunk or k, k))
    return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), out)


def token_count(model, variables, images: Array) -> tuple[int, int]:
    """(N', D): the encoder's tokens and width for these images (shapes only, no compute)."""
    shapes = jax.eval_shape(
        lambda v, x: model.apply(v, x)[1]["block_inputs"][0],
        variables,
        images,
    )
    return int(shapes.shape[1]), int(shapes.shape[2])
