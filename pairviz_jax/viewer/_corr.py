"""The correspondence C a page shows, by method: one path for the explorer and the report.

``fold`` turns images into per-image ``explain.Folded`` (W [B, N, E] and u [B, E]) by the
chosen method: ``"paper"`` through the rollout (eq. 5-6; ``explain.fold``), ``"bilrp"``
through the whole network (``explain.methods.bilrp``: E backward passes per image).
``pairs`` splits the cosine of aligned pairs over patch pairs with
``explain.correspondence`` (C = W_a W_b^T, its marginals the paired maps, and the rest
terms), whatever made the folds: the explorer folds its two images, the report reads a
job's own folds (``embed/``) or folds its images with the model.

Which methods have a C, the line that refuses the others, and the paper each C comes from
live here too, so the explorer, the report and their command lines say the same thing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["WITH_C", "describe", "fold", "pairs", "problem", "take"]

# Methods whose explanation is a correspondence C: the paper's (through the rollout) and
# every method that folds per image (explain.methods: ``Method.fold``). Kept as names so
# the command line can check --method without importing JAX (tests/test_viewer.py checks
# it against the registry).
WITH_C = ("paper", "bilrp")

# (what C is, the papers it comes from): the pages' legends and headers.
SOURCES = {
    "paper": (
        "rollout C = M_A P M_B^T",
        "Black et al., WACV 2022, eq. 4-6",
    ),
    "bilrp": (
        "second-order C = W_A W_B^T (BiLRP)",
        "Eberle et al., TPAMI 2020; conservative rules of Vasileiou & Eberle, NAACL 2024 "
        "and Ali et al., ICML 2022",
    ),
}


def describe(method: str) -> str:
    """One line naming ``method``'s C and the paper(s) it comes from."""
    what, paper = SOURCES[method]
    return f"{what} ({paper})"


def problem(method: str, model: Any = None) -> str | None:
    """Why ``method`` has no C (for ``model`` when given), in one line; None if it has one."""
    if method not in WITH_C:
        from pairviz_jax.plotting.cli import METHOD_NAMES

        what = "is not a method" if method not in METHOD_NAMES else "gives per-patch maps only"
        return (
            f"--method {method}: {what}, no correspondence C between patches; "
            f"expected one of {', '.join(WITH_C)}"
        )
    if model is not None and method != "paper" and not getattr(model, "has_attention", False):
        return (
            f"--method {method}: needs a ViT (attention and blocks); this model "
            f"({type(model).__name__}) has none; --method paper gives its C over "
            "feature-map cells"
        )
    return None


def _fold_batch(model, variables, x, method: str, kw: dict):
    from pairviz_jax import explain
    from pairviz_jax.explain.methods import base

    if method == "paper":
        f = explain.features(model, variables, x, head_fusion=kw["head_fusion"])
        return explain.fold(f, **kw)
    m = base.get(method)
    opts = base.check_options(m, {})
    opts.pop("target")
    return m.fold(explain.Inputs(model, variables, x), **opts)


def fold(
    model,
    variables,
    images: np.ndarray,
    method: str,
    *,
    convention: str = "transpose",
    start_layer: int = 0,
    head_fusion: str = "mean",
    batch: int = 8,
    progress=None,
):
    """Per-image folds of ``images`` by ``method`` (C of a pair is then one product).

    Args:
      model, variables: the model (a ViT for methods other than ``"paper"``).
      images: float32 [B, H, W, 3], normalised as the model expects.
      method: one of ``WITH_C``.
      convention, start_layer, head_fusion: the paper's rollout (ignored by other methods).
      batch: images per compiled call (the last batch is padded: one compilation).
      progress: a callable taking the number of images folded so far, or None.

    Returns:
      ``explain.Folded`` with numpy ``w`` [B, N, E], ``unit`` [B, E] (and ``rest``).
    """
    import jax

    kw = dict(convention=convention, start_layer=start_layer, head_fusion=head_fusion)
    images = np.asarray(images, np.float32)
    n = len(images)
    size = min(batch, n)
    parts = []
    for lo in range(0, n, size):
        x = images[lo : lo + size]
        pad = size - len(x)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        got = jax.device_get(_fold_batch(model, variables, x, method, kw))
        keep = size - pad
        parts.append(jax.tree.map(lambda t, k=keep: np.asarray(t)[:k], got))
        if progress is not None:
            progress(min(lo + size, n))
    return jax.tree.map(lambda *t: np.concatenate(t), *parts)


def take(folded, ids):
    """The folds of images ``ids`` (an int array) of a ``Folded``."""
    import jax

    ids = np.asarray(ids, np.int64)
    return jax.tree.map(lambda t: np.asarray(t)[ids], folded)


def pairs(folded_a, folded_b, *, chunk: int = 64) -> dict[str, np.ndarray]:
    """C of aligned pairs (a[k], b[k]): ``explain.correspondence(..., aligned=True)``.

    Args:
      folded_a, folded_b: ``explain.Folded`` of K images each (``fold``, ``take``).
      chunk: pairs per compiled call (the last chunk is padded: one compilation).

    Returns:
      numpy float32: ``corr`` [K, N_a, N_b], ``map_a`` [K, gh, gw], ``map_b``, ``rest_a``
      [K, N_a], ``rest_b`` [K, N_b], ``rest`` [K], ``score`` [K]; exactly
      ``corr.sum(-1) + rest_a`` = ``map_a`` and ``corr`` + the rests sum to ``score``.
    """
    import jax

    from pairviz_jax import explain

    k = len(folded_a)
    size = min(chunk, k)
    out: dict[str, list[np.ndarray]] = {}
    for lo in range(0, k, size):
        ids = np.arange(lo, lo + size).clip(max=k - 1)  # padded with the last pair
        got = explain.correspondence(take(folded_a, ids), take(folded_b, ids), aligned=True)
        for key, v in jax.device_get(got).items():
            out.setdefault(key, []).append(np.asarray(v)[: min(size, k - lo)])
    return {key: np.concatenate(v) for key, v in out.items()}
