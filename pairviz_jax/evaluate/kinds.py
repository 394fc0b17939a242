"""The maps an evaluation compares: every explanation method and the baselines, by name.

Methods (``explain.methods``): ``authors`` and ``transpose`` (the paper's method, eq. 6 either
way; one forward shared with the baselines below), ``gradxinput``, ``chefer``,
``conservative``, ``ig`` (each with its registry options, ``method_options``).

Baselines, which do not depend on the partner or do not explain the cosine:

* ``rollout``: the output-agnostic rollout map (``explain.rollout_map``): the class
  token's row of R for a model with a class token, else the mean of the patch rows;
* ``rollout_mean``: the mean of R's patch rows (the same as ``rollout`` without a class
  token);
* ``gamma``: eq. 4 without rollout: each token's share of the cosine at the level where
  the embedding splits (the output tokens for ``gap``), drawn at its own patch;
* ``random``: uniform noise, one map per (pair, partner), seeded by the pair's index.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax.explain.cross import redistributed
from pairviz_jax.explain.maps import forward
from pairviz_jax.explain.methods.base import cotangent

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST

FEATURE_KINDS = ("authors", "transpose", "rollout", "rollout_mean", "gamma")
METHOD_KINDS = ("gradxinput", "chefer", "conservative", "ig")
KINDS = (
    "authors",
    "transpose",
    "gradxinput",
    "chefer",
    "conservative",
    "ig",
    "rollout",
    "rollout_mean",
    "gamma",
    "random",
)


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple; ValueError naming the unknown ones."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(
            f"unknown map kind {', '.join(map(repr, unknown))}; expected some of {KINDS}"
        )
    if not kinds:
        raise ValueError(f"no map kinds given; expected some of {KINDS}")
    return tuple(kinds)


def _feature_body(model, kinds, target, variables, images, partners):
    f = forward(model, variables, images, "mean")
    cot = cotangent(f.embedding, partners, target)  # [B, K, E]
    b, k = cot.shape[:2]
    gh, gw = f.grid
    n = gh * gw
    out = {}
    for conv in ("authors", "transpose"):
        if conv in kinds:
            w = redistributed(f, conv, 0, "mean")  # [B, N, E]
            m = jnp.einsum("bne,bke->bkn", w, cot, precision=_HI)
            out[conv] = m.reshape(b, k, gh, gw)
    if "gamma" in kinds:
        parts, _ = f.contributions()
        g = sum(jnp.einsum("bte,bke->bkt", v, cot, precision=_HI) for v in parts.values())
        out["gamma"] = g[..., g.shape[-1] - n :].reshape(b, k, gh, gw)
    if "rollout" in kinds or "rollout_mean" in kinds:
        if f.attention is None:
            raise ValueError("rollout baselines need a model with attention (a ViT)")
        r = f.rollout(0, "mean")  # [B, N', N']
        p = r.shape[-1] - n
        mean_rows = r[:, p:, p:].mean(1)
        cls_row = r[:, 0, p:] if getattr(model, "num_class_tokens", 0) else mean_rows
        for name, m in (("rollout", cls_row), ("rollout_mean", mean_rows)):
            if name in kinds:
                out[name] = jnp.broadcast_to(m.reshape(b, 1, gh, gw), (b, k, gh, gw))
    return out


@functools.lru_cache(maxsize=32)
def _feature_fn(model, kinds, target):
    return jax.jit(functools.partial(_feature_body, model, kinds, target))


def random_maps(
    index: Sequence[int], partners: int, grid: tuple[int, int], seed: int = 0
) -> np.ndarray:
    """Uniform noise [B, K, gh, gw]; pair i's maps depend only on (seed, i)."""
    return np.stack(
        [np.random.default_rng([seed, int(i)]).uniform(size=(partners, *grid)) for i in index]
    ).astype(np.float32)


def kind_maps(
    model,
    variables,
    images: Array,
    partners: Array,
    kinds: Sequence[str],
    *,
    method_options: Mapping[str, Mapping] | None = None,
    index: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The maps of every kind for B images, each against K partners.

    Args:
      model, variables: the model.
      images: [B, H, W, C] normalised (the explained images).
      partners: [B, K, E] the partners' embeddings.
      kinds: names from ``KINDS``.
      method_options: ``{method: {option: value}}`` for the ``explain.methods`` kinds
        (``{"paper": {"target": ...}}`` for ``authors``, ``transpose`` and ``gamma``).
      index: the pairs' global indices (seeds of the random maps; default 0..B-1).
      seed: seed of the random maps.

    Returns:
      kind -> [B, K, gh, gw] float32.
    """
    kinds = check_kinds(kinds)
    method_options = dict(method_options or {})
    grid = model.grid(images.shape)
    out = {}
    feature = tuple(k for k in kinds if k in FEATURE_KINDS)
    if feature:
        target = method_options.get("paper", {}).get("target", "score")
        got = _feature_fn(model, feature, target)(variables, images, partners)
        out.update({k: np.asarray(v) for k, v in got.items()})
    for k in kinds:
        if k in METHOD_KINDS:
            res = explain.against(
                model, variables, images, partners, method=k, **method_options.get(k, {})
            )
            out[k] = np.asarray(res["maps"])
        elif k == "random":
            idx = range(len(images)) if index is None else index
            out[k] = random_maps(idx, partners.shape[1], grid, seed)
    return {k: out[k] for k in kinds}
