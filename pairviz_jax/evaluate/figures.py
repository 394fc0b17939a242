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


def _padded_calls(fn, x, p, size):
    """``fn(x, p)`` on rows of x [R, ...] and p [R, K, E] in calls of exactly ``size`` rows
    (the last row repeated): {kind: [R, K, gh, gw]}."""
    got: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(x), size):
        xs, ps = x[s : s + size], p[s : s + size]
        pad = size - len(xs)
        if pad:
            xs = np.concatenate([xs, np.repeat(xs[-1:], pad, axis=0)])
            ps = np.concatenate([ps, np.repeat(ps[-1:], pad, axis=0)])
        for k, v in fn(jnp.asarray(xs), jnp.asarray(ps)).items():
            got.setdefault(k, []).append(np.asarray(v)[: size - pad])
    return {k: np.concatenate(v) for k, v in got.items()}


def _figure_maps(loaded, x, emb_p, group, method_options, layout):
    """{kind: [2, 2, gh, gw]}: B of both pairs (x [2, S, S, 3]) against both partners (emb_p
    [2, 2, E]; the single pair's partner repeated).

    ``layout`` None: one call of that shape. ``(size, k)``: calls of ``size`` rows against
    ``k`` partners (the shape the evaluation compiled, when shared: nothing new compiles):
    k = 1 takes the rows (pair 0, partner 0), (pair 1, partner 0), (pair 1, partner 1);
    k = 2 both pairs against both partners.
    """

    def fn(xs, ps):
        return kind_maps(
            loaded.model, loaded.variables, xs, ps, group, method_options=method_options
        )

    if layout is None:
        return {k: np.asarray(v) for k, v in fn(x, emb_p).items()}
    size, k = layout
    x, emb_p = np.asarray(x), np.asarray(emb_p)
    if k == 2:
        return _padded_calls(fn, x, emb_p, size)
    rows = _padded_calls(fn, x[[0, 1, 1]], emb_p[[0, 1, 1], [0, 0, 1]][:, None], size)
    return {kind: v[[0, 0, 1, 2], 0].reshape(2, 2, *v.shape[2:]) for kind, v in rows.items()}


def _rows(loaded, datas, kinds, method_options, log=None, share=None):
    """[(distractor, partner uint8, B uint8, masks [K, S, S], {kind: map [S, S]}, score, j)]
    for the first pair of each of ``datas`` (the pair, then the distractor pair).

    One call per map kind (the paper's maps and the baselines share one forward, B of both
    pairs [2, S, S, 3] against K = 2 partners, the single pair's repeated; a method: the three
    rows, each against its partner), so each method compiles once for the figure. ``share``: the
    evaluation's ``(kinds, map rows per call, partners per call, images per forward)``; its
    kinds are computed in its shapes instead (``_figure_maps``), the paper's maps and
    baselines as its one group, so the figure reuses what the evaluation compiles.
    """
    import time

    x = np.concatenate([d["images"][:1] for d in datas])
    partners = [np.asarray(d["partners"][0]) for d in datas]  # [K_i, S, S, 3]
    partners = [np.concatenate([p] * (2 // len(p))) if len(p) < 2 else p for p in partners]
    shared_kinds, size, k, embed_size = share or ((), None, None, None)
    # B and the partners in one forward (padded to the evaluation's batch when shared).
    both = np.concatenate([*partners, x])
    n = len(both)
    if embed_size and n < embed_size:
        both = np.concatenate([both, np.repeat(both[-1:], embed_size - n, axis=0)])
    emb = np.asarray(explain.embed(loaded.model, loaded.variables, jnp.asarray(both)))[:n]
    nk = sum(len(p) for p in partners)
    emb_p, emb_x = emb[:nk].reshape(len(datas), 2, -1), emb[nk:]
    feature = tuple(kk for kk in kinds if kk in FEATURE_KINDS)
    shared_feature = tuple(kk for kk in shared_kinds if kk in FEATURE_KINDS)
    groups = [feature]
    if feature and set(feature) <= set(shared_feature):
        groups = [shared_feature]
    groups += [(kk,) for kk in kinds if kk not in FEATURE_KINDS]
    maps = {}
    for group in filter(None, groups):
        t = time.perf_counter()
        if share and set(group) <= set(shared_kinds):
            layout = (size, k)
        elif group[0] in FEATURE_KINDS:
            layout = None  # one forward serves both pairs
        else:  # the three rows, no backward pass for a repeated partner
            layout = (3, 1)
        got = _figure_maps(loaded, jnp.asarray(x), emb_p, group, method_options, layout)
        maps.update({kk: np.asarray(got[kk]) for kk in group if kk in kinds})
        if log:
            shown = ", ".join(kk for kk in group if kk in kinds)
            log(f"figure: maps of {shown} ({time.perf_counter() - t:.1f} s)")
    size_px = x.shape[1:3]
    rows = []
    for i, d in enumerate(datas):
        for j in range(d["partners"].shape[1]):
            up = {
                kind: np.asarray(explain.upsample(jnp.asarray(m[i, j]), size_px))
                for kind, m in maps.items()
            }
            score = float(explain.cosine(jnp.asarray(emb_x[i]), jnp.asarray(emb_p[i, j])))
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
    share: tuple | None = None,
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
      share: the evaluation run with the figure, ``(kinds, map rows per call, partners per
        call, images per forward)``: its kinds are computed in its compiled shapes (no
        compile of their own); None: the figure's own shapes.

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
    rows = _rows(loaded, datas, kinds, method_options, log, share)
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
