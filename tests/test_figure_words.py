"""Figures explain themselves: titles in words, the map's quantity named per method, signed
maps on a colour scale centred at 0, and the report's cards side by side in both orders."""

import argparse
import os
import re

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pairviz_jax.plotting import cli, figures  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG = np.full((16, 16, 3), 100, np.uint8)
POSITIVE = np.linspace(0.1, 1.0, 256).reshape(16, 16)
SIGNED = np.linspace(-0.5, 1.0, 256).reshape(16, 16)


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _bar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]


def _heat(fig):
    """The colour-mapped image of the first map panel."""
    return next(
        im
        for ax in fig.axes
        for im in ax.images
        if im.get_array().ndim == 2 and im.cmap.name != "gray"
    )


def test_titles_are_words_not_symbols():
    fig = figures.pair_figure(
        IMG, IMG, POSITIVE, POSITIVE, 0.5, names=("test image 0", "test image 24")
    )
    titles = _titles(fig)
    assert "test image 0:\nmap vs test image 24" in titles and not any("|" in t for t in titles)
    assert "cosine similarity of test image 0 and test image 24" in fig._suptitle.get_text()
    maps = np.stack([np.stack([POSITIVE] * 2)] * 2)
    fig = figures.matrix_figure([IMG, IMG], maps, np.ones((2, 2)), names=["cat", "coffee"])
    assert "cat vs coffee\ncosine 1.000" in _titles(fig)
    row = figures.RetrievalRow("model", IMG, [IMG], [POSITIVE], [0.7])
    assert "result 1\ncosine 0.700" in _titles(figures.retrieval_figure([row]))


@pytest.mark.parametrize(
    "method, convention, words",
    [
        ("paper", "authors", "share of the cosine"),
        ("paper", "transpose", "sums to the score"),
        ("chefer", "authors", "relevance"),
        ("gradxinput", "authors", "attribution"),
        ("conservative", "authors", "attribution"),
        ("ig", "authors", "integrated-gradients"),
    ],
)
def test_the_colour_bar_names_what_the_method_measures(method, convention, words):
    args = argparse.Namespace(
        cmap="inferno", alpha=0.6, dpi=100, style="modern", method=method, convention=convention
    )
    if method != "paper":
        args.convention = "authors"
    style = cli._kw(args)["style"]
    fig = figures.pair_figure(IMG, IMG, POSITIVE, POSITIVE, 0.5, style=style)
    assert any(words in label for label in _bar_labels(fig)), _bar_labels(fig)
    if method != "paper":
        assert not any("share of the cosine" in label for label in _bar_labels(fig))


def test_signed_maps_get_a_diverging_scale_centred_at_zero():
    heat = _heat(figures.pair_figure(IMG, IMG, SIGNED, SIGNED, 0.5))
    assert heat.norm.vmin == -heat.norm.vmax == -1.0
    assert heat.cmap.name == "RdBu_r"
    heat = _heat(figures.pair_figure(IMG, IMG, POSITIVE, POSITIVE, 0.5))
    assert heat.norm.vmin == pytest.approx(0.1) and heat.cmap.name == "inferno"
    # A colormap asked for is kept, still centred at 0.
    heat = _heat(
        figures.pair_figure(IMG, IMG, SIGNED, SIGNED, 0.5, style=figures.Style(cmap="viridis"))
    )
    assert heat.cmap.name == "viridis" and heat.norm.vmin == -heat.norm.vmax


def test_report_cards_are_side_by_side_in_score_order():
    with open(os.path.join(ROOT, "pairviz_jax", "viewer", "static", "style.css")) as f:
        css = f.read()
    rule = re.search(r"(?:^|\})\s*\.results\s*\{([^}]*)\}", css)
    assert rule and "display: flex" in rule.group(1) and "wrap" in rule.group(1)


def test_figures_are_written_in_the_format_the_extension_names(tmp_path):
    from PIL import Image

    for ext, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG")):
        fig = figures.pair_figure(IMG, IMG, POSITIVE, POSITIVE, 0.5)
        (path,) = figures.save_figure(fig, str(tmp_path / f"x{ext}"))
        assert path.endswith(ext)
        with Image.open(path) as im:
            assert im.format == fmt
    fig = figures.pair_figure(IMG, IMG, POSITIVE, POSITIVE, 0.5)
    assert figures.save_figure(fig, str(tmp_path / "y.pdf")) == [str(tmp_path / "y.pdf")]
    assert open(tmp_path / "y.pdf", "rb").read(4) == b"%PDF"
