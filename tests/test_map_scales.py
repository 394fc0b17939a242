"""Maps are never drawn blank: a colour scale per figure that shows every map's structure
(one per map when a shared one would flatten some), signed maps centred at 0, and one stderr
line when a map is nearly constant (``figures.FLAT_RTOL``)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pairviz_jax.plotting import figures  # noqa: E402
from pairviz_jax.plotting.figures import RetrievalRow  # noqa: E402

IMG = np.full((16, 16, 3), 100, np.uint8)
RAMP = np.linspace(0.0, 1.0, 256).reshape(16, 16)
EPS = float(np.finfo(np.float32).eps)
RTOL = 1024 * EPS  # figures.FLAT_RTOL: 1024 float32 ulps of the largest |value|


@pytest.fixture(autouse=True)
def _close_figures():
    """Every figure a test draws is closed after it (matplotlib keeps open figures alive)."""
    yield
    plt.close("all")


def _heats(fig):
    """The colour-mapped map images, panel by panel."""
    return [
        im
        for ax in fig.axes
        for im in ax.images
        if im.get_array().ndim == 2 and im.cmap.name != "gray"
    ]


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "nearly constant" in line]


def test_maps_with_different_offsets_each_get_their_own_range():
    """The paper's maps of DINOv2-S/14 on the README pair: A's in 0.00722..0.00782, B's in
    0.00045..0.00069. One shared range drew each as one colour; now each spans its own."""
    map_a = 0.00722 + 0.0006 * RAMP
    map_b = 0.00045 + 0.00024 * RAMP.T
    fig = figures.pair_figure(IMG, IMG, map_a, map_b, 0.51)
    heats = _heats(fig)
    assert len(heats) == 2
    for heat, m in zip(heats, (map_a, map_b), strict=True):
        assert heat.norm.vmin == pytest.approx(m.min()) and heat.norm.vmax == pytest.approx(m.max())
        assert heat.cmap.name == "inferno"
    # Each map spans its whole colour range: the drawn colours differ across the map.
    for heat, m in zip(heats, (map_a, map_b), strict=True):
        scaled = heat.norm(m)
        assert scaled.min() == pytest.approx(0.0, abs=1e-6)
        assert scaled.max() == pytest.approx(1.0, abs=1e-6)
    assert len(fig.axes) == 4 + 2  # a colour bar under each map


def test_maps_that_show_on_one_scale_keep_sharing_it():
    fig = figures.pair_figure(IMG, IMG, RAMP, 0.5 * RAMP.T, 0.5)
    heats = _heats(fig)
    assert heats[0].norm is heats[1].norm
    assert (heats[0].norm.vmin, heats[0].norm.vmax) == (0.0, 1.0)
    assert len(fig.axes) == 4 + 1  # one colour bar


def test_signed_maps_are_symmetric_about_zero_each_on_its_own_magnitude():
    """A signed map of magnitude 1 beside one of magnitude 0.01: each on a range symmetric
    about 0 (diverging colormap), and the small one on its own (a shared +-1 drew it white)."""
    big = 2.0 * RAMP - 1.0  # -1 .. 1
    small = 0.01 * (2.0 * RAMP.T - 0.5)  # -0.005 .. 0.015
    heats = _heats(figures.pair_figure(IMG, IMG, big, small, 0.5))
    for heat, m in zip(heats, (big, small), strict=True):
        top = float(np.abs(m).max())
        assert heat.norm.vmin == pytest.approx(-top) and heat.norm.vmax == pytest.approx(top)
        assert heat.norm.vmin == -heat.norm.vmax  # exactly symmetric: 0 is the middle colour
        assert heat.cmap.name == "RdBu_r"


def test_a_negative_map_with_an_offset_is_not_centred_into_one_colour():
    """All values in -1 .. -0.99: centred at 0 it would be one shade of blue; it is drawn on
    its own range, the colour bar reading negative values."""
    m = -1.0 + 0.01 * RAMP
    (heat,) = _heats(figures.pair_figure(IMG, IMG, m, m, 0.5))[:1]
    assert heat.norm.vmin == pytest.approx(-1.0) and heat.norm.vmax == pytest.approx(-0.99)


@pytest.mark.parametrize(
    "flat",
    [
        np.zeros((16, 16)),
        np.full((16, 16), 0.0073),
        # A spread of half the threshold on top of the offset: float32 noise, not structure.
        0.0073 * (1.0 + 0.5 * RTOL * RAMP),
    ],
)
def test_a_nearly_constant_map_warns_in_one_line(flat, capsys):
    figures.pair_figure(IMG, IMG, flat, RAMP, 0.5, names=("cat", "coffee"))
    err = capsys.readouterr().err
    lines = _warnings(err)
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert "cat's map vs coffee" in lines[0] and "coffee's map vs cat" not in lines[0]


def test_a_structured_map_does_not_warn(capsys):
    """Twice the threshold is structure (and so are real maps with a large offset)."""
    for m in (RAMP, 0.0073 * (1.0 + 2.0 * RTOL * RAMP), 0.00722 + 0.0006 * RAMP):
        figures.pair_figure(IMG, IMG, m, m, 0.5)
    assert _warnings(capsys.readouterr().err) == []


def test_the_threshold_is_derived_from_float32():
    assert figures.FLAT_RTOL == pytest.approx(RTOL)
    assert figures.nearly_constant(np.full((4, 4), -3.0))
    assert not figures.nearly_constant(np.array([[1.0, 1.0 + 2 * RTOL]]))
    assert not figures.nearly_constant(np.array([[np.nan, 1.0]]))


def test_retrieval_rows_warn_once_for_the_figure(capsys):
    """retrieve --compare: two rows (two models), each with two flat result maps: one line
    naming the four."""
    flat = np.full((16, 16), -0.01)
    rows = [
        RetrievalRow(name, IMG, [IMG, IMG], [flat, flat], [0.9, 0.8]) for name in ("vit", "cnn")
    ]
    figures.retrieval_figure(rows)
    lines = _warnings(capsys.readouterr().err)
    assert len(lines) == 1
    assert all(f"{n}: result {i}" in lines[0] for n in ("vit", "cnn") for i in (1, 2))
    # The same figure with structure in every map: silent.
    rows = [RetrievalRow("vit", IMG, [IMG, IMG], [RAMP, RAMP.T], [0.9, 0.8])]
    figures.retrieval_figure(rows)
    assert _warnings(capsys.readouterr().err) == []
