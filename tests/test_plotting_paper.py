"""The authors' renderer: OpenCV's JET written out, and pixels computed by hand."""

import numpy as np
import pytest

from pairviz_jax.plotting import paper
from pairviz_jax.plotting.paper import JET, minmax, paper_overlay, to_grey

# cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
# (RGB) from opencv-python-headless 4.10.0.84, as hex; OpenCV 5.0.0 gives the same bytes.
OPENCV_JET_RGB_HEX = (
    "00008000008400008800008c00009000009400009800009c0000a00000a40000a80000ac0000b00000b40000b80000bc"
    "0000c00000c40000c80000cc0000d00000d40000d80000dc0000e00000e40000e80000ec0000f00000f40000f80000fc"
    "0000ff0004ff0008ff000cff0010ff0014ff0018ff001cff0020ff0024ff0028ff002cff0030ff0034ff0038ff003cff"
    "0040ff0044ff0048ff004cff0050ff0054ff0058ff005cff0060ff0064ff0068ff006cff0070ff0074ff0078ff007cff"
    "0080ff0084ff0088ff008cff0090ff0094ff0098ff009cff00a0ff00a4ff00a8ff00acff00b0ff00b4ff00b8ff00bcff"
    "00c0ff00c4ff00c8ff00ccff00d0ff00d4ff00d8ff00dcff00e0ff00e4ff00e8ff00ecff00f0ff00f4ff00f8ff00fcff"
    "02fffe06fffa0afff60efff212ffee16ffea1affe61effe222ffde26ffda2affd62effd232ffce36ffca3affc63effc2"
    "42ffbe46ffba4affb64effb252ffae56ffaa5affa65effa262ff9e66ff9a6aff966eff9272ff8e76ff8a7aff867eff82"
    "82ff7e86ff7a8aff768eff7292ff6e96ff6a9aff669eff62a2ff5ea6ff5aaaff56aeff52b2ff4eb6ff4abaff46beff42"
    "c2ff3ec6ff3acaff36ceff32d2ff2ed6ff2adaff26deff22e2ff1ee6ff1aeaff16eeff12f2ff0ef6ff0afaff06feff01"
    "fffc00fff800fff400fff000ffec00ffe800ffe400ffe000ffdc00ffd800ffd400ffd000ffcc00ffc800ffc400ffc000"
    "ffbc00ffb800ffb400ffb000ffac00ffa800ffa400ffa000ff9c00ff9800ff9400ff9000ff8c00ff8800ff8400ff8000"
    "ff7c00ff7800ff7400ff7000ff6c00ff6800ff6400ff6000ff5c00ff5800ff5400ff5000ff4c00ff4800ff4400ff4000"
    "ff3c00ff3800ff3400ff3000ff2c00ff2800ff2400ff2000ff1c00ff1800ff1400ff1000ff0c00ff0800ff0400ff0000"
    "fc0000f80000f40000f00000ec0000e80000e40000e00000dc0000d80000d40000d00000cc0000c80000c40000c00000"
    "bc0000b80000b40000b00000ac0000a80000a40000a000009c00009800009400009000008c0000880000840000800000"
)

# cv2.resize(np.float32([[0, .5], [.25, 1]]), (4, 4), interpolation=cv2.INTER_CUBIC)
OPENCV_CUBIC_2x2_TO_4x4 = np.array(
    [
        [-0.076321, 0.08094, 0.339958, 0.497219],
        [-0.002068, 0.182755, 0.487167, 0.671989],
        [0.120232, 0.350449, 0.72963, 0.959846],
        [0.194485, 0.452263, 0.876839, 1.134617],
    ]
)


def test_jet_equals_opencv_applycolormap():
    opencv = np.frombuffer(bytes.fromhex("".join(OPENCV_JET_RGB_HEX)), np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(JET, opencv)


def test_jet_follows_the_piecewise_linear_definition():
    # 255 * jet(i / 255): blue ramps 127.5 -> 255 over i = 0..32, green 0 -> 255 over 32..96, ...
    assert JET.shape == (256, 3) and JET.dtype == np.uint8
    assert tuple(JET[0]) == (0, 0, 128)  # dark blue (127.5 rounds to even 128)
    assert tuple(JET[32]) == (0, 0, 255)
    assert tuple(JET[96]) == (2, 255, 254)  # 1.5 -> 2, 253.5 -> 254
    assert tuple(JET[160]) == (255, 252, 0)
    assert tuple(JET[255]) == (128, 0, 0)  # dark red: high similarity is red (RGB order)
    # Away from rounding ties the table is the formula rounded.
    i = np.arange(256)
    green = np.clip(np.minimum(4 * i - 127.5, -4 * i + 892.5), 0, 255)
    exact = green == np.round(green)
    np.testing.assert_array_equal(JET[exact, 1], green[exact])
    assert not JET.flags.writeable


def test_paper_overlay_matches_pixels_computed_by_hand():
    # A 2x2 map at image size (no upsampling): min-max gives [[0, 1], [.5, .25]],
    # uint8(255 m) = [[0, 255], [127, 63]]
    #   -> JET (RGB) (0,0,128) (128,0,0) (126,255,130) (0,124,255).
    heat = np.array([[0.0, 4.0], [2.0, 1.0]])
    image = np.array([[[255, 255, 255], [0, 0, 0]], [[255, 0, 0], [0, 0, 255]]], np.uint8)
    # grey = .2989 R + .587 G + .114 B over 255: .9999, 0, .2989, .114. Sums:
    #   (0,0)  (.9999, .9999, 128/255 + .9999 = 1.50186)  <- the maximum
    #   (0,1)  (128/255, 0, 0)
    #   (1,0)  (126/255 + .2989, 1 + .2989, 130/255 + .2989)
    #   (1,1)  (.114, 124/255 + .114, 1 + .114)
    # then uint8(255 * s / 1.50186), truncated: e.g. 255 * .9999 / 1.50186 = 169.77 -> 169.
    expected = np.array(
        [[[169, 169, 255], [85, 0, 0]], [[134, 220, 137], [19, 101, 189]]], np.uint8
    )
    np.testing.assert_array_equal(paper_overlay(image, heat), expected)


def test_paper_overlay_upsamples_token_maps_like_opencv_inter_cubic():
    grid = np.array([[0.0, 0.5], [0.25, 1.0]])
    up = paper._upsample(grid, (4, 4))
    np.testing.assert_allclose(up, OPENCV_CUBIC_2x2_TO_4x4, atol=2e-6)
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    np.testing.assert_array_equal(
        paper_overlay(image, grid), paper_overlay(image, OPENCV_CUBIC_2x2_TO_4x4)
    )


def test_minmax_is_per_map_after_upsampling_and_safe_for_constant_maps():
    maps = np.stack([np.arange(4.0).reshape(2, 2), 10 + 3 * np.arange(4.0).reshape(2, 2)])
    out = minmax(maps)
    np.testing.assert_allclose(out[0], out[1])  # each map stretched to [0, 1] on its own
    assert out.min() == 0 and out.max() == 1
    np.testing.assert_array_equal(minmax(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    image = np.full((3, 3, 3), 100, np.uint8)
    out = paper_overlay(image, np.full((3, 3), 7.0))  # constant map: JET[0] everywhere
    assert np.isfinite(out).all() and (out == out[0, 0]).all()


def test_to_grey_uses_the_authors_weights():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(to_grey(rgb), [[0.2989, 0.587, 0.114]])


@pytest.mark.parametrize(
    "image, heat",
    [
        (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4))),  # not uint8
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4))),  # not RGB
        (np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2, 2))),  # map not 2-D
        (np.zeros((4, 4, 3), np.uint8), np.full((4, 4), np.nan)),  # not finite
    ],
)
def test_paper_overlay_rejects_bad_arguments(image, heat):
    with pytest.raises(ValueError):
        paper_overlay(image, heat)
