"""Image loading for the CLI: every Pillow mode to 8-bit RGB, one-line errors naming the file."""

import numpy as np
import pytest
from PIL import Image

from pairviz_jax.plotting.images import InputError, load_image


def _save(tmp_path, image: Image.Image, name: str, **kw) -> str:
    path = str(tmp_path / name)
    image.save(path, **kw)
    return path


def test_rgb_png_round_trips(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = load_image(_save(tmp_path, Image.fromarray(rgb), "rgb.png"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, rgb)


def test_greyscale_is_replicated_to_three_channels(tmp_path):
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    out = load_image(_save(tmp_path, Image.fromarray(grey, "L"), "grey.png"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


def test_bilevel_image(tmp_path):
    bits = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    out = load_image(_save(tmp_path, bits, "bits.png"))
    np.testing.assert_array_equal(out, [[[0, 0, 0], [255, 255, 255]]])


def test_palette_image_uses_its_palette(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putdata([0, 1])
    out = load_image(_save(tmp_path, p, "palette.png"))
    np.testing.assert_array_equal(out, [[[10, 20, 30], [200, 100, 50]]])


def test_palette_transparency_is_composited_onto_white(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putdata([0, 1])
    path = _save(tmp_path, p, "palette_t.png", transparency=0)
    np.testing.assert_array_equal(load_image(path), [[[255, 255, 255], [200, 100, 50]]])


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = _save(tmp_path, Image.fromarray(wide), "wide.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really stored as 16 bits
    out = load_image(path)
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 128, 255]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_32_bit_integer_and_float_greyscale(tmp_path):
    ints = Image.fromarray(np.array([[0, 65535]], np.int32), "I")
    np.testing.assert_array_equal(load_image(_save(tmp_path, ints, "i.tif"))[..., 1], [[0, 255]])
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    out = load_image(_save(tmp_path, floats, "f.tif"))
    np.testing.assert_array_equal(out[..., 0], [[0, 128, 255]])


def test_float_image_with_inf_pixels_is_scaled_by_its_finite_pixels(tmp_path, capsys):
    """One +Inf patch in a [0, 1] float TIFF rendered the rest almost black, silently."""
    x = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (16, 1))
    clean = load_image(_save(tmp_path, Image.fromarray(x, "F"), "clean.tif"))
    assert capsys.readouterr().err == ""
    bad = x.copy()
    bad[:4, :4] = np.inf
    bad[8, 8] = np.nan
    out = load_image(_save(tmp_path, Image.fromarray(bad, "F"), "inf.tif"))
    finite = np.isfinite(bad)
    np.testing.assert_array_equal(out[finite], clean[finite])  # same scale as without
    assert (out[:4, :4] == 255).all() and (out[8, 8] == 0).all()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "inf.tif" in err and "17 of 256 pixels" in err


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_onto_white(tmp_path, mode):
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128]]], np.uint8)
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    out = load_image(_save(tmp_path, image, f"alpha_{mode}.png"))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # transparent -> white
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])  # opaque black stays black
    assert 120 <= out[0, 2, 0] <= 135  # half transparent black over white: mid grey


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red
    out = load_image(_save(tmp_path, cmyk, "cmyk.jpg"))
    assert out.shape == (4, 4, 3) and out[..., 0].min() > 200 and out[..., 1].max() < 60


def _one_line_error(path: str, match: str) -> str:
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path) and match in message
    return message


def test_missing_file(tmp_path):
    _one_line_error(str(tmp_path / "nope.png"), "no such file")


def test_directory(tmp_path):
    _one_line_error(str(tmp_path), "is a directory")


def test_not_an_image(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    _one_line_error(str(path), "not an image")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _one_line_error(str(path), "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path, fmt):
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(rgb).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    _one_line_error(str(cut), "corrupt or truncated")
