"""Every method side by side on photo pairs: one pair, and one distractor pair with both
partners (the pair sensitivity, seen)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax.evaluate.kinds import FEATURE_KINDS, kind_maps
from pairviz_jax.evaluate.photos import photo_pairs
from pairviz_jax.evaluate.results import LABELS

FIGURE_KINDS = ("authors", "transpose", "gradxinput", "chefer", "conservative", "ig", "rollout")
_SHORT = {
    "authors": "paper (R γ)",
    "transpose": "paper (Rᵀ γ)",
    "gradxinput": "grad × input",
    "chefer": "Chefer et al. (ICCV 2021)",
    "conservative": "conservative",
    "ig": "int. gradients",
    "rollout": "rollout only",
    "rollout_mean": "rollout, mean",
    "gamma": "γ only",
}


def _rows(loaded, datas, kinds, method_options, log=None):
    """[(distractor, partner uint8, B uint8, masks [K, S, S], {kind: map [S, S]}, score, j)]
    for the first pair of each of ``datas`` (the pair, then the distractor pair).

    Both pairs go through one call per map kind (the paper's maps and the baselines share one
    forward): B of both stacked [2, S, S, 3], each against K = 2 partners (the single pair's
    partner repeated), so each method compiles once for the figure.
    """
    import time

    x = jnp.asarray(np.concatenate([d["images"][:1] for d in datas]))
    partners = [np.asarray(d["partners"][0]) for d in datas]  # [K_i, S, S, 3]
    partners = [np.concatenate([p] * (2 // len(p))) if len(p) < 2 else p for p in partners]
    emb_p = explain.embed(loaded.model, loaded.variables, jnp.asarray(np.concatenate(partners)))
    emb_p = emb_p.reshape(len(datas), 2, -1)
    groups = [tuple(k for k in kinds if k in FEATURE_KINDS)]
    groups += [(k,) for k in kinds if k not in FEATURE_KINDS]
    maps = {}
    for group in filter(None, groups):
        t = time.perf_counter()
        got = kind_maps(
            loaded.model, loaded.variables, x, emb_p, group, method_options=method_options
        )
        maps.update({k: np.asarray(got[k]) for k in group})
        if log:
            log(f"figure: maps of {', '.join(group)} ({time.perf_counter() - t:.1f} s)")
    emb_x = explain.embed(loaded.model, loaded.variables, x)
    size = x.shape[1:3]
    rows = []
    for i, d in enumerate(datas):
        for j in range(d["partners"].shape[1]):
            up = {
                kind: np.asarray(explain.upsample(jnp.asarray(m[i, j]), size))
                for kind, m in maps.items()
            }
            score = float(explain.cosine(emb_x[i], emb_p[i, j]))
            rows.append(
                (
                    i == 1,
                    d["uint8_partners"][0, j],
                    d["uint8_images"][0],
                    d["masks"][0],
                    up,
                    score,
                    j,
                )
            )
    return rows


def methods_figure(
    loaded,
    path: str,
    *,
    pair: int = 0,
    split: str = "b",
    seed: int = 0,
    kinds: Sequence[str] = FIGURE_KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    dpi: int = 110,
    log: Callable[[str], None] | None = None,
) -> str:
    """Draws B's map by every method, for one pair and for one distractor pair (both partners).

    Args:
      loaded: the model (``plotting.load_weights``/``load_run``).
      path: the PNG to write.
      pair: which pair of the half (``photo_pairs`` index).
      split: the photo half.
      seed: the pairs' seed.
      kinds: the maps, one column each.
      method_options: ``{method: {option: value}}``.
      dpi: resolution.
      log: progress lines (each method's maps, with seconds); None: silent.

    Returns:
      ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    h, _ = loaded.image_size
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    datas = [
        photo_pairs(
            [pair], split=split, image_size=h, seed=seed, distractor=distractor, normalization=norm
        )
        for distractor in (False, True)
    ]
    if log:
        log(f"figure: every method on 2 photo pairs of half {split} (first: compiles)")
    rows = _rows(loaded, datas, kinds, method_options, log)
    ncol = 2 + len(kinds)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.6 * ncol, 1.75 * len(rows)), squeeze=False)
    colours = ("#33ff66", "#ff3366")
    for r, (distractor, partner, image, masks, up, score, j) in enumerate(rows):
        ax = axes[r]
        ax[0].imshow(partner)
        what = (
            "partner"
            if not distractor
            else ("partner 1 (shared)" if j == 0 else "partner 2 (distractor)")
        )
        ax[0].set_title(what, fontsize=7)
        ax[1].imshow(image)
        for m, c in zip(masks, colours, strict=False):
            ax[1].contour(m, levels=[0.5], colors=c, linewidths=0.8)
        ax[1].set_title(f"B  (cos {score:.3f})", fontsize=7)
        for c, kind in enumerate(kinds):
            m = up[kind]
            m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
            ax[2 + c].imshow(image)
            ax[2 + c].imshow(m, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax[2 + c].contour(masks[j], levels=[0.5], colors=colours[j], linewidths=0.6)
            if r == 0:
                ax[2 + c].set_title(_SHORT.get(kind, LABELS.get(kind, kind)), fontsize=7)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(
        f"{loaded.label}: B's map against its partner, every method (photo half {split}); "
        "green: the object B shares with partner 1, red: with partner 2",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
