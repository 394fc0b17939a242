"""Every method side by side on photo pairs: one pair, and one distractor pair with both
partners (the pair sensitivity, seen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax.evaluate.kinds import kind_maps
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


def _rows(loaded, data, kinds, method_options):
    """[(partner uint8, B uint8, masks [K, S, S], {kind: map [S, S]}, score, title)]."""
    x = jnp.asarray(data["images"][:1])
    k = data["partners"].shape[1]
    emb_p = explain.embed(loaded.model, loaded.variables, jnp.asarray(data["partners"][0]))
    maps = kind_maps(
        loaded.model, loaded.variables, x, emb_p[None], kinds, method_options=method_options
    )
    emb_x = explain.embed(loaded.model, loaded.variables, x)[0]
    size = data["images"].shape[1:3]
    rows = []
    for j in range(k):
        up = {
            kind: np.asarray(explain.upsample(jnp.asarray(m[0, j]), size))
            for kind, m in maps.items()
        }
        score = float(explain.cosine(emb_x, emb_p[j]))
        rows.append(
            (data["uint8_partners"][0, j], data["uint8_images"][0], data["masks"][0], up, score, j)
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

    Returns:
      ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    h, _ = loaded.image_size
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    rows = []
    for distractor in (False, True):
        data = photo_pairs(
            [pair], split=split, image_size=h, seed=seed, distractor=distractor, normalization=norm
        )
        for row in _rows(loaded, data, kinds, method_options):
            rows.append((distractor, *row))
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
