"""Figure layouts from arrays alone (no model): panels, colour bars, borders, titles, files."""

import os

import matplotlib.colors
import numpy as np
import pytest
from PIL import Image

from pairviz_jax.plotting import figures
from pairviz_jax.plotting.figures import MATCH_COLOUR, RetrievalRow, Style

RNG = np.random.default_rng(0)
H = W = 12


def _img():
    return RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _map(scale=1.0):
    return RNG.standard_normal((H, W)) * scale


def test_pair_modern_shares_one_scale_and_has_a_colour_bar():
    fig = figures.pair_figure(_img(), _img(), _map(), _map(5.0), 0.8125, names=("P", "Q"))
    assert len(fig.axes) == 5
    overlays = [ax.images[-1] for ax in fig.axes[1:3]]
    assert overlays[0].norm.vmin == overlays[1].norm.vmin
    assert overlays[0].norm.vmax == overlays[1].norm.vmax
    assert [ax.get_title() for ax in fig.axes[:4]] == ["P", "P:\nmap vs Q", "Q:\nmap vs P", "Q"]
    assert "0.812" in fig._suptitle.get_text() or "0.813" in fig._suptitle.get_text()


def test_pair_paper_style_draws_the_authors_pixels():
    a, b, ma, mb = _img(), _img(), _map(), _map()
    fig = figures.pair_figure(a, b, ma, mb, 0.5, style=Style("paper"))
    assert len(fig.axes) == 4  # no colour bar: every map has its own min-max
    from pairviz_jax.plotting.paper import paper_overlay

    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), paper_overlay(a, ma))


def test_matrix_layout_and_checks():
    n = 3
    maps = RNG.standard_normal((n, n, H, W))
    scores = RNG.uniform(size=(n, n))
    fig = figures.matrix_figure([_img() for _ in range(n)], maps, scores)
    assert len(fig.axes) == n * n + 1
    assert fig.axes[1].get_title().startswith("A vs B\ncosine")
    assert fig.axes[0].get_title() == "A" and not fig.axes[0].images[0].get_array().ndim == 2
    with pytest.raises(ValueError, match="at least 2"):
        figures.matrix_figure([_img()], maps[:1, :1], scores[:1, :1])
    with pytest.raises(ValueError, match=r"\[3, 3, H, W\]"):
        figures.matrix_figure([_img() for _ in range(n)], maps[:2], scores)


def test_retrieval_green_border_only_on_matching_labels():
    row = RetrievalRow(
        title="ViT",
        query=_img(),
        results=[_img() for _ in range(3)],
        maps=[_map() for _ in range(3)],
        scores=[0.9, 0.8, 0.7],
        correct=[True, False, True],
    )
    short = RetrievalRow("ResNet", _img(), [_img()], [_map()], [0.5], correct=None)
    fig = figures.retrieval_figure([row, short])
    assert len(fig.axes) == 2 * 4 + 2
    green = matplotlib.colors.to_rgba(MATCH_COLOUR)
    bordered = [
        ax.spines["top"].get_visible() and ax.spines["top"].get_edgecolor() == green
        for ax in fig.axes[:8]
    ]
    # row 1: query, 3 results; row 2: query, 1 result, 2 empty
    assert bordered == [False, True, False, True, False, False, False, False]
    assert fig.axes[1].get_title().endswith("0.900")
    assert not fig.axes[6].axison and not fig.axes[7].axison


def test_class_map_and_rollout_layouts():
    maps = [_map(), _map(40.0) + 100.0]  # sums over classes of different sizes
    fig = figures.class_map_figure([_img(), _img()], maps, ["c 1", "c 2"], source="run @ step 9")
    assert len(fig.axes) == 2 * 2 + 2  # a colour bar under each map
    for ax, m in zip(fig.axes[2:4], maps, strict=True):  # each map on its own scale
        norm = ax.images[-1].norm
        top = np.abs(m).max()  # a signed map: centred at 0
        assert (norm.vmin, norm.vmax) == ((-top, top) if m.min() < 0 else (m.min(), m.max()))
    assert fig._suptitle.get_text() == "run @ step 9"  # class maps: no pair, no score
    fig = figures.rollout_figure(_img(), _img(), _map(), _map(), _map(), _map(), 0.25)
    assert len(fig.axes) == 6 + 2
    assert [fig.axes[i].get_title() for i in (1, 2, 4, 5)] == [
        "A:\nrollout (any output)",
        "A:\nmap vs B",
        "B:\nrollout (any output)",
        "B:\nmap vs A",
    ]
    with pytest.raises(ValueError):
        figures.class_map_figure([_img()], [], ["x"])


@pytest.mark.parametrize("kw", [dict(name="neon"), dict(alpha=1.5), dict(cmap="no_such_colormap")])
def test_style_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        Style(**kw)


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig = figures.pair_figure(_img(), _img(), _map(), _map(), 0.1, style=Style(dpi=50))
    size = fig.get_size_inches() * 50
    paths = figures.save_figure(fig, str(tmp_path / "sub" / "fig"), pdf=True)
    assert paths == [str(tmp_path / "sub" / "fig.png"), str(tmp_path / "sub" / "fig.pdf")]
    assert all(os.path.getsize(p) > 0 for p in paths)
    with Image.open(paths[0]) as im:
        assert im.size == tuple(int(round(s)) for s in size)


def test_readme_figures_exist_and_stay_small():
    from pairviz_jax.plotting.demo import FIGURES

    folder = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "figures")
    for name in FIGURES:  # rendered by `python visualize.py demo --out docs/figures`
        assert os.path.isfile(os.path.join(folder, name)), name
    for name in os.listdir(folder):
        if name.endswith(".png"):
            assert os.path.getsize(os.path.join(folder, name)) < 300_000, name
