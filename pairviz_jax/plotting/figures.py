"""The paper's figures as matplotlib figures, from images and maps already computed.

Every function takes uint8 RGB images at the model's input size [H, W, 3] and maps at
the same size [H, W] (``upsampled_*`` of ``pairviz_jax.explain.paired_maps``, or
``explain.upsample`` of any token map) and returns a ``matplotlib.figure.Figure``.
Two styles:

* ``"modern"`` (default): the map in a perceptual colormap (``inferno``), drawn with
  ``alpha`` over a greyscale copy of the image, one colour scale shared by the maps of a
  figure (so maps are comparable across panels) and a colour bar, unless that scale would
  leave a map nearly one colour (its spread under ``_SHOWN`` of the range, e.g. two maps with
  different offsets): then each map gets its own scale and colour bar. Signed maps are drawn
  on a diverging colormap centred at 0 (a range symmetric about 0);
* ``"paper"``: the authors' pictures (:func:`pairviz_jax.plotting.paper.paper_overlay`:
  per-map min-max, OpenCV's JET, added onto the greyscale image); no colour bar, since
  every map is stretched to its own range.

A map that is nearly constant (``nearly_constant``: max - min <= ``FLAT_RTOL`` max |map|, 1024
float32 ulps) has nothing to show on any scale; each figure says so in one stderr line
(``warn_flat``).

Titles carry the cosine similarity of each pair, and ``source`` (the model and the
checkpoint step the maps come from, e.g. ``demo @ step 3500``) when given. A green border
marks a retrieved image whose label matches the query's (Fig. 6, Fig. 9). Class maps are
sums over classes of different sizes, so each is drawn on its own colour scale.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from pairviz_jax.plotting.paper import paper_overlay, to_grey

__all__ = [
    "MATCH_COLOUR",
    "STYLES",
    "RetrievalRow",
    "Style",
    "class_map_figure",
    "map_quantity",
    "matrix_figure",
    "pair_figure",
    "retrieval_figure",
    "rollout_figure",
]

STYLES = ("modern", "paper")
MATCH_COLOUR = "#1a9e1a"  # the green border of a correct retrieval


@dataclasses.dataclass(frozen=True)
class Style:
    """How maps are drawn.

    Attributes:
      name: ``"modern"`` or ``"paper"``.
      cmap: matplotlib colormap of the modern style.
      alpha: opacity of the map over the image (modern style).
      panel: size of one image panel in inches.
      dpi: resolution of saved figures.
      interpolation: matplotlib's resampling of the pictures to the screen; ``nearest``
        shows the model's input pixels as they are (and keeps PNGs small).
      map_label: what the maps are, for the colour bar (:func:`map_quantity` of the method).
      diverging_cmap: the colormap of signed maps (negative and positive values), drawn on a
        scale centred at 0 (modern style), when ``cmap`` is the default.
    """

    name: str = "modern"
    cmap: str = "inferno"
    alpha: float = 0.6
    panel: float = 1.9
    dpi: int = 100
    interpolation: str = "nearest"
    map_label: str = ""
    diverging_cmap: str = "RdBu_r"

    def __post_init__(self):
        if self.name not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.name!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.cmap not in matplotlib.colormaps:
            raise ValueError(f"cmap must be a matplotlib colormap, got {self.cmap!r}")

    @property
    def colour_bar(self) -> bool:
        return self.name == "modern"


_DEFAULT = Style()


def _figure(
    rows: int, cols: int, style: Style, extra_width: float = 0.0
) -> tuple[Figure, np.ndarray]:
    width = cols * style.panel + extra_width
    height = rows * (style.panel + 0.3) + 0.45
    fig, axes = plt.subplots(
        rows, cols, figsize=(width, height), dpi=style.dpi, squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return fig, axes


# Maps whose negative part reaches this fraction of their largest magnitude are signed.
_SIGNED = 0.02
# A map "shows" on a colour scale when its spread (max - min) covers at least this fraction of
# the scale's span (about 25 of a colormap's 256 colours). A shared scale that leaves some map
# below it (e.g. two maps with different offsets, as the paper's maps of a real ViT have) is
# split into one scale per map, and a signed scale centred at 0 is used only when the maps'
# spread covers this fraction of it.
_SHOWN = 0.1
# A map is nearly constant when max - min <= FLAT_RTOL * max |map| (or it is all zeros): its
# spread is then within the rounding error of float32 sums of ~10^3 terms (1024 ulps of its
# largest value), so no colour scale can show structure that is not noise.
FLAT_RTOL = 1024 * float(np.finfo(np.float32).eps)  # 1.2e-4


def nearly_constant(heat: np.ndarray) -> bool:
    """Whether ``heat`` [H, W] is nearly constant (``FLAT_RTOL``): max - min <= FLAT_RTOL *
    max |heat|; a map with a non-finite value is not judged (False)."""
    heat = np.asarray(heat, np.float64)
    if not np.all(np.isfinite(heat)):
        return False
    spread = float(heat.max() - heat.min())
    return spread <= FLAT_RTOL * float(np.abs(heat).max())


def warn_flat(maps: Sequence[np.ndarray], labels: Sequence[str]) -> str | None:
    """One stderr line naming the maps of a figure that are nearly constant (``nearly_constant``);
    nothing when none is. Returns the line (or None)."""
    flat = [(lab, m) for lab, m in zip(labels, maps, strict=True) if nearly_constant(m)]
    if not flat:
        return None
    names = ", ".join(lab.replace("\n", " ") for lab, _ in flat)
    m = np.asarray(flat[0][1], np.float64)
    line = (
        f"warning: nearly constant map{'s' if len(flat) > 1 else ''} ({names}): max - min = "
        f"{float(m.max() - m.min()):.3g} <= {FLAT_RTOL:.2g} x max |map| = "
        f"{float(np.abs(m).max()):.3g}; the figure shows no structure (try another --method)"
    )
    print(line, file=sys.stderr, flush=True)
    return line


def _norm(maps: Sequence[np.ndarray], style: Style = _DEFAULT) -> Normalize:
    """One colour scale for ``maps``: their range, or, for signed maps whose spread shows on
    it, a range symmetric about 0 (0 in the middle of a diverging colormap,
    ``norm.cmap_name``)."""
    lo = min(float(np.min(m)) for m in maps)
    hi = max(float(np.max(m)) for m in maps)
    top = max(abs(lo), abs(hi))
    if lo < 0 and -lo >= _SIGNED * top and hi - lo >= _SHOWN * top:
        norm = Normalize(-top, top)
        norm.cmap_name = style.diverging_cmap if style.cmap == Style.cmap else style.cmap
        return norm
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    norm = Normalize(lo, hi)
    norm.cmap_name = style.cmap
    return norm


def _scales(maps: Sequence[np.ndarray], style: Style = _DEFAULT) -> list[Normalize]:
    """A colour scale per map: one shared by all (the same object) when every map's spread
    covers at least ``_SHOWN`` of it, else each map on its own (``_norm``), so that no map
    is drawn as one colour because another sets the range."""
    shared = _norm(maps, style)
    span = shared.vmax - shared.vmin
    if all(float(np.max(m) - np.min(m)) >= _SHOWN * span for m in maps) or all(
        nearly_constant(m) for m in maps
    ):
        return [shared] * len(maps)
    return [_norm([m], style) for m in maps]


def _cmap(norm: Normalize | None, style: Style) -> str:
    return getattr(norm, "cmap_name", style.cmap)


def _image(ax, image: np.ndarray, style: Style, title: str | None = None) -> None:
    ax.imshow(image, interpolation=style.interpolation)
    if title:
        ax.set_title(title, fontsize=8)


def _overlay(ax, image, heat, style: Style, norm: Normalize | None, title: str | None = None):
    if style.name == "paper":
        ax.imshow(paper_overlay(image, heat), interpolation=style.interpolation)
    else:
        grey = to_grey(image)
        ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation=style.interpolation)
        ax.imshow(
            heat,
            cmap=_cmap(norm, style),
            norm=norm,
            alpha=style.alpha,
            interpolation=style.interpolation,
        )
    if title:
        ax.set_title(title, fontsize=8)


def _border(ax, colour: str, width: float = 4.0) -> None:
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def _colour_bar(fig: Figure, axes, style: Style, norm: Normalize, label: str) -> None:
    if not style.colour_bar:
        return
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=_cmap(norm, style))
    bar = fig.colorbar(mappable, ax=axes, shrink=0.85, pad=0.02, aspect=25)
    bar.set_label(label or style.map_label or _MAP_LABEL, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _bars(fig: Figure, group, axes: Sequence, norms: Sequence[Normalize], style: Style,
          label: str) -> None:  # fmt: skip
    """The colour bars of maps drawn on ``norms`` (``_scales``): one beside ``group`` when the
    scale is shared, else one under each map's axis."""
    if not style.colour_bar:
        return
    if all(n is norms[0] for n in norms):
        _colour_bar(fig, group, style, norms[0], label)
        return
    for ax, norm in zip(axes, norms, strict=True):
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=_cmap(norm, style))
        bar = fig.colorbar(mappable, ax=ax, location="bottom", shrink=0.9, pad=0.03)
        bar.ax.tick_params(labelsize=6)
        bar.ax.xaxis.set_major_locator(MaxNLocator(3))
    if label or style.map_label:
        fig.supxlabel(f"{label or style.map_label} (each map on its own scale)", fontsize=8)


_MAP_LABEL = "share of the cosine (paper's method)"

# What each method's map is (the colour bar's label): only the paper's maps are shares of
# the cosine similarity; the gradient methods' are relevances or attributions of it.
_QUANTITY = {
    "authors": "share of the cosine, R gamma (paper, eq. 4-6)",
    "transpose": "share of the cosine, R^T gamma (sums to the score)",
    "chefer": "relevance (Chefer et al.), not a split of the cosine",
    "gradxinput": "gradient x input attribution of the cosine",
    "conservative": "attribution of the cosine (sums to it minus the biases)",
    "ig": "integrated-gradients attribution of the cosine",
}


def map_quantity(method: str = "paper", convention: str = "authors") -> str:
    """The name of what ``method``'s maps measure, for colour bars and legends."""
    key = convention if method == "paper" else method
    return _QUANTITY.get(key, f"{method} attribution of the cosine")


def _suptitle(fig: Figure, *lines: str | None) -> None:
    text = "\n".join(line for line in lines if line)
    if text:
        fig.suptitle(text, fontsize=10)


def pair_figure(
    image_a: np.ndarray,
    image_b: np.ndarray,
    map_a: np.ndarray,
    map_b: np.ndarray,
    score: float,
    *,
    names: tuple[str, str] = ("A", "B"),
    style: Style = _DEFAULT,
    source: str | None = None,
) -> Figure:
    """Fig. 3/4: the two images and their paired maps side by side.

    Args:
      image_a, image_b: uint8 [H, W, 3].
      map_a: A's map with respect to B, [H, W].
      map_b: B's map with respect to A, [H, W].
      score: their cosine similarity.
      names: what to call the images in titles.
      style: drawing style.
      source: the model and step, for the title.

    Returns:
      A figure with 4 image panels (A, A|B, B|A, B), plus a colour bar (modern style).
    """
    a, b = names
    fig, axes = _figure(1, 4, style, extra_width=0.6 if style.colour_bar else 0.0)
    norms = _scales([map_a, map_b], style)
    _image(axes[0, 0], image_a, style, a)
    _overlay(axes[0, 1], image_a, map_a, style, norms[0], f"{a}:\nmap vs {b}")
    _overlay(axes[0, 2], image_b, map_b, style, norms[1], f"{b}:\nmap vs {a}")
    _image(axes[0, 3], image_b, style, b)
    _bars(fig, axes[0, :], axes[0, 1:3], norms, style, "")
    warn_flat([map_a, map_b], [f"{a}'s map vs {b}", f"{b}'s map vs {a}"])
    _suptitle(fig, f"cosine similarity of {a} and {b} = {score:.3f}", source)
    return fig


def matrix_figure(
    images: Sequence[np.ndarray],
    maps: np.ndarray,
    scores: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    style: Style = _DEFAULT,
    source: str | None = None,
) -> Figure:
    """Fig. 1: N x N grid, images on the diagonal, row i column j the map i|j.

    Args:
      images: N uint8 images [H, W, 3].
      maps: [N, N, H, W]; ``maps[i, j]`` is image i's map with respect to image j.
      scores: [N, N] cosine similarities.
      names: titles of the images (default A, B, C, ...).
      style: drawing style.
      source: the model and step, for the title.

    Returns:
      A figure with N * N panels, plus a colour bar (modern style).
    """
    n = len(images)
    if n < 2:
        raise ValueError(f"matrix needs at least 2 images, got {n}")
    if maps.shape[:2] != (n, n) or np.shape(scores) != (n, n):
        raise ValueError(f"maps must be [{n}, {n}, H, W] and scores [{n}, {n}]")
    names = list(names) if names is not None else [chr(ord("A") + i) for i in range(n)]
    fig, axes = _figure(n, n, style, extra_width=0.7 if style.colour_bar else 0.0)
    off = [(i, j) for i in range(n) for j in range(n) if i != j]
    norms = dict(zip(off, _scales([maps[i, j] for i, j in off], style), strict=True))
    for i in range(n):
        for j in range(n):
            if i == j:
                _image(axes[i, j], images[i], style, names[i])
                _border(axes[i, j], "black", 1.5)
            else:
                title = f"{names[i]} vs {names[j]}\ncosine {scores[i, j]:.3f}"
                _overlay(axes[i, j], images[i], maps[i, j], style, norms[i, j], title)
    _bars(fig, axes, [axes[i, j] for i, j in off], list(norms.values()), style, "")
    warn_flat([maps[i, j] for i, j in off], [f"{names[i]} vs {names[j]}" for i, j in off])
    _suptitle(fig, "row i, column j: image i's map vs image j", source)
    return fig


@dataclasses.dataclass
class RetrievalRow:
    """One row of a retrieval figure: a query and its top-k results with their maps.

    Attributes:
      title: row label (e.g. the model or the training step).
      query: uint8 [H, W, 3].
      results: k uint8 images [H, W, 3].
      maps: k maps [H, W]: each result's map with respect to the query.
      scores: k cosine similarities.
      correct: k booleans (label matches the query's), or None when labels are unknown.
      names: k short names for titles, or None.
      query_map: optional [H, W] map drawn on the query (e.g. w.r.t. the top result).
    """

    title: str
    query: np.ndarray
    results: Sequence[np.ndarray]
    maps: Sequence[np.ndarray]
    scores: Sequence[float]
    correct: Sequence[bool] | None = None
    names: Sequence[str] | None = None
    query_map: np.ndarray | None = None


def retrieval_figure(
    rows: Sequence[RetrievalRow], *, style: Style = _DEFAULT, source: str | None = None
) -> Figure:
    """Fig. 6 / Fig. 9: per row a query and its top-k results with their maps.

    Args:
      rows: one :class:`RetrievalRow` per model (Fig. 9's ViT vs ResNet) or per
        checkpoint (Fig. 6); the row titles name the model and step.
      style: drawing style.
      source: a figure title (e.g. the run of Fig. 6's rows).

    Returns:
      A figure with ``len(rows) * (1 + k)`` panels (k the longest row), plus one colour
      bar per row (modern style; maps of different models are not on one scale).
    """
    if not rows:
        raise ValueError("retrieval_figure needs at least one row")
    k = max(len(r.results) for r in rows)
    fig, axes = _figure(len(rows), 1 + k, style, extra_width=0.7 if style.colour_bar else 0.0)
    every, labels = [], []
    for r, row in enumerate(rows):
        maps = list(row.maps) + ([row.query_map] if row.query_map is not None else [])
        norms = _scales(maps, style) if maps else []
        drawn = [axes[r, 1 + i] for i in range(len(row.maps))]
        if row.query_map is not None:
            _overlay(axes[r, 0], row.query, row.query_map, style, norms[-1], "query")
            drawn.append(axes[r, 0])
        else:
            _image(axes[r, 0], row.query, style, "query")
        axes[r, 0].set_ylabel(row.title, fontsize=8)
        for i in range(k):
            ax = axes[r, 1 + i]
            if i >= len(row.results):
                ax.set_axis_off()
                continue
            name = row.names[i] if row.names else f"result {i + 1}"
            title = f"{name}\ncosine {row.scores[i]:.3f}"
            _overlay(ax, row.results[i], row.maps[i], style, norms[i], title)
            if row.correct is not None and row.correct[i]:
                _border(ax, MATCH_COLOUR)
        if norms:
            _bars(fig, axes[r, :], drawn, norms, style, "")
        every += maps
        who = row.title or f"row {r + 1}"
        labels += [f"{who}: result {i + 1}" for i in range(len(row.maps))]
        labels += [f"{who}: query"] * (row.query_map is not None)
    warn_flat(every, labels)
    _suptitle(fig, source)
    return fig


def class_map_figure(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    style: Style = _DEFAULT,
    source: str | None = None,
) -> Figure:
    """Fig. 5: each query image above its class similarity map (Section 4.2).

    A class map sums a query's maps over the members of its class, so maps of different
    classes differ in scale by the class sizes and the similarities; each map is drawn on
    its own colour scale (a shared one leaves the weaker maps a single colour).

    Args:
      images: Q uint8 images [H, W, 3].
      maps: Q class maps [H, W].
      titles: Q titles (class and number of members).
      style: drawing style.
      source: the model and step, for the title.

    Returns:
      A figure with 2 * Q panels, plus a colour bar under each map (modern style).
    """
    q = len(images)
    if q == 0 or len(maps) != q or len(titles) != q:
        raise ValueError("class_map_figure needs as many maps and titles as images (>= 1)")
    fig, axes = _figure(2, q, style)
    warn_flat(maps, [f"class map of {t}" for t in titles])
    for i in range(q):
        norm = _norm([maps[i]], style)
        _image(axes[0, i], images[i], style, titles[i])
        _overlay(axes[1, i], images[i], maps[i], style, norm, "class map (sum over the class)")
        if style.colour_bar:
            mappable = plt.cm.ScalarMappable(norm=norm, cmap=_cmap(norm, style))
            bar = fig.colorbar(mappable, ax=axes[1, i], location="bottom", shrink=0.9, pad=0.03)
            bar.ax.tick_params(labelsize=6)
            bar.ax.xaxis.set_major_locator(MaxNLocator(3))
    _suptitle(fig, source)
    return fig


def rollout_figure(
    image_a: np.ndarray,
    image_b: np.ndarray,
    rollout_a: np.ndarray,
    rollout_b: np.ndarray,
    map_a: np.ndarray,
    map_b: np.ndarray,
    score: float,
    *,
    names: tuple[str, str] = ("A", "B"),
    style: Style = _DEFAULT,
    source: str | None = None,
) -> Figure:
    """Fig. 8: output-agnostic rollout maps beside the paired similarity maps.

    Args:
      image_a, image_b: uint8 [H, W, 3].
      rollout_a, rollout_b: rollout maps [H, W] (``explain.rollout_map``, upsampled).
      map_a, map_b: the paired maps [H, W] (A|B and B|A).
      score: cosine similarity of A and B.
      names: what to call the images.
      style: drawing style.
      source: the model and step, for the title.

    Returns:
      A figure with 2 x 3 panels (image, rollout, paired map per row), plus two colour
      bars (modern style: rollout and similarity are on different scales).
    """
    a, b = names
    fig, axes = _figure(2, 3, style, extra_width=1.4 if style.colour_bar else 0.0)
    norm_r = _scales([rollout_a, rollout_b], style)
    norm_s = _scales([map_a, map_b], style)
    for r, (name, other, image, roll, sim) in enumerate(
        [(a, b, image_a, rollout_a, map_a), (b, a, image_b, rollout_b, map_b)]
    ):
        _image(axes[r, 0], image, style, name)
        _overlay(axes[r, 1], image, roll, style, norm_r[r], f"{name}:\nrollout (any output)")
        _overlay(axes[r, 2], image, sim, style, norm_s[r], f"{name}:\nmap vs {other}")
    _bars(fig, axes[:, 1], axes[:, 1], norm_r, style, "rollout weight (output-agnostic)")
    _bars(fig, axes[:, 2], axes[:, 2], norm_s, style, "")
    warn_flat([map_a, map_b], [f"{a}'s map vs {b}", f"{b}'s map vs {a}"])
    _suptitle(fig, f"cosine similarity of {a} and {b} = {score:.3f}", source)
    return fig


def save_figure(fig: Figure, path: str, *, pdf: bool = False, dpi: int | None = None) -> list[str]:
    """Writes ``fig`` at ``path`` in the format its extension names (``.png``, ``.jpg``,
    ``.jpeg``, ``.pdf``, ``.svg``; no extension: ``path + ".png"``), and with ``pdf`` a PDF
    beside it; closes the figure.

    Returns:
      The paths written.
    """
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        path, ext = path + ".png", ".png"
    if ext not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise ValueError(f"{path}: expected a .png, .jpg, .jpeg, .pdf or .svg file")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    written = []
    try:
        if ext in (".png", ".jpg", ".jpeg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi or fig.dpi)
            with Image.open(buffer) as rgba:  # opaque figure: RGB compresses better than RGBA
                rgb = rgba.convert("RGB")
                if ext == ".png":
                    rgb.save(path, optimize=True)
                else:
                    rgb.save(path, format="JPEG", quality=95)
        else:
            fig.savefig(path, dpi=dpi or fig.dpi)
        written.append(path)
        pdf_path = os.path.splitext(path)[0] + ".pdf"
        if pdf and ext != ".pdf":
            fig.savefig(pdf_path)
            written.append(pdf_path)
    finally:
        plt.close(fig)
    return written
