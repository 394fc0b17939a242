"""``visualize.py evaluate --swap``: the swap test's table and a figure of a few triples."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from pairviz_jax.evaluate.swap import SWAP_KINDS, SwapResult, evaluate_swap, triple_arrays

__all__ = ["run", "swap_figure"]

# Drawn beside the best method when no --method is given.
FIGURE_KINDS = ("occlusion", "authors", "chefer")


def _outline(ax, mask: np.ndarray, colour: str) -> None:
    ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)


def swap_figure(
    result: SwapResult,
    images: dict,
    path: str,
    kinds: Sequence[str],
    rows: int = 3,
    title: str | None = None,
) -> str:
    """For the first ``rows`` triples: A (X outlined green, Y orange), B1, B2, then per kind
    A's map against B1 and against B2 side by side (each map scaled on its own, signed maps
    on a diverging scale centred at 0).

    Args:
      result: the swap test's result (its ``maps``).
      images: ``triple_arrays`` of at least those triples (``uint8_a``, ``uint8_partners``,
        ``a_masks``, ``b_masks``).
      path: the PNG.
      kinds: the kinds drawn.
      rows: triples drawn.
      title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pairviz_jax.explain import upsample

    rows = min(rows, len(result), len(images["uint8_a"]))
    cols = 3 + 2 * len(kinds)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.5), squeeze=False)
    size = images["uint8_a"].shape[1:3]
    for r in range(rows):
        masks = images["a_masks"][r]
        heads = ["A: X green, Y orange", "B1 (holds X)", "B2 (holds Y)"]
        pics = [images["uint8_a"][r], *images["uint8_partners"][r]]
        for c, (pic, head) in enumerate(zip(pics, heads, strict=True)):
            axes[r, c].imshow(pic)
            if c == 0:
                _outline(axes[r, c], masks[0], "lime")
                _outline(axes[r, c], masks[1], "orange")
            else:
                _outline(axes[r, c], images["b_masks"][r, c - 1], "lime" if c == 1 else "orange")
            if r == 0:
                axes[r, c].set_title(head, fontsize=7)
        for i, kind in enumerate(kinds):
            m = np.asarray(upsample(np.asarray(result.maps[kind][r], np.float32), size))
            for k in range(2):
                ax = axes[r, 3 + 2 * i + k]
                lo, hi = float(m[k].min()), float(m[k].max())
                if lo < 0 < hi:
                    v = max(-lo, hi)
                    ax.imshow(m[k], cmap="RdBu_r", vmin=-v, vmax=v)
                else:
                    ax.imshow(m[k], cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
                _outline(ax, masks[0], "lime")
                _outline(ax, masks[1], "orange")
                hit = result.metrics[kind]["swap"][r]
                if r == 0:
                    ax.set_title(f"{kind} vs B{k + 1}", fontsize=7)
                if k == 1:
                    ax.text(1.0, 0.0, "swap" if hit else "", transform=ax.transAxes,
                            fontsize=6, ha="right", va="bottom", color="k")  # fmt: skip
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(
    loaded,
    *,
    out: str,
    half: str = "a",
    triples: int | None = None,
    kinds: Sequence[str] = SWAP_KINDS,
    method_options: Mapping[str, Mapping] | None = None,
    cache: str | None = None,
    window: int = 2,
    log=None,
) -> tuple[str, list[str]]:
    """The swap test from command-line values: (the Markdown report, [the figure PNG]).

    ``kinds``: the maps measured (``commands.swap_kinds``); ``method_options``:
    ``{method: {option: value}}`` (``commands.parse_options``).
    ``half`` ``"a"`` is the development half; ``"b"`` is held out (run it once, at the end).
    Finished chunks are kept in ``cache`` (default: a folder beside ``out``) and reused.
    """
    from pairviz_jax.evaluate.photos import log_stderr

    n = 40 if triples is None else triples
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    stem, ext = os.path.splitext(out)
    result = evaluate_swap(
        loaded,
        n,
        split=half,
        kinds=kinds,
        method_options=method_options,
        window=window,
        cache_dir=cache or stem + "_swap_chunks",
        log=log or log_stderr,
    )
    held = " (held out)" if half == "b" else " (development)"
    title = f"{loaded.label}: swap test, photo half {half}{held}"
    text = f"## {title}\n\n{result.table()}\n\n{result.comparisons()}"
    best = result.best()
    shown = [k for k in FIGURE_KINDS if k in kinds]
    if best and best not in shown:
        shown.append(best)
    norm = None if loaded.mean is None else (loaded.mean, loaded.std)
    images = triple_arrays(
        range(min(3, n)), split=half, image_size=loaded.image_size[0], normalization=norm
    )
    figure = swap_figure(result, images, f"{stem}_swap_{half}{ext or '.png'}", shown, title=title)
    return text, [figure]
