"""Decoding and checking of image files (pairviz_jax.data.images)."""

import io

import numpy as np
import pytest
from PIL import Image

from pairviz_jax.data.images import CorruptImageError, checked_image_bytes, decode_image


def _encode(array, fmt="JPEG", **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _smooth(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-5, 6, base.shape), 0, 255).astype(np.uint8)


def test_decode_grayscale_and_rgba_give_rgb():
    gray = _encode(np.full((7, 9), 100, np.uint8), "PNG")
    out = np.asarray(decode_image(gray))
    assert out.shape == (7, 9, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 100)
    rgba = _encode(np.full((4, 5, 4), 200, np.uint8), "PNG")
    assert np.asarray(decode_image(rgba)).shape == (4, 5, 3)
    assert np.asarray(decode_image(np.zeros((3, 4, 1), np.uint8))).shape == (3, 4, 3)


def test_decode_corrupt_raises_with_where():
    data = _encode(_smooth(64, 64))
    with pytest.raises(CorruptImageError, match="img-7"):
        decode_image(data[: len(data) // 2], where="img-7")
    with pytest.raises(CorruptImageError, match="not a readable image"):
        decode_image(b"this is not an image")
    with pytest.raises(CorruptImageError, match="uint8"):
        decode_image(np.zeros((4, 4, 3), np.float32))


def test_decode_min_size_uses_dct_scaling_but_not_below_the_size():
    data = _encode(_smooth(400, 320))
    full = decode_image(data)
    small = decode_image(data, min_size=(90, 70))
    assert full.size == (320, 400)
    assert small.size == (80, 100)  # 1/4 scale is the smallest >= (70, 90)
    assert decode_image(data, min_size=(300, 300)).size == (320, 400)


def test_checked_bytes_keeps_rgb_jpeg_and_converts_grayscale(tmp_path):
    rgb = _encode(_smooth(20, 30))
    (tmp_path / "rgb.jpg").write_bytes(rgb)
    assert checked_image_bytes(tmp_path / "rgb.jpg") == rgb

    Image.fromarray(np.full((10, 12), 77, np.uint8)).save(tmp_path / "gray.jpg")
    out = checked_image_bytes(tmp_path / "gray.jpg")
    image = Image.open(io.BytesIO(out))
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (12, 10)

    Image.fromarray(np.full((5, 6, 4), 9, np.uint8)).save(tmp_path / "rgba.png")
    image = Image.open(io.BytesIO(checked_image_bytes(tmp_path / "rgba.png")))
    assert image.format == "PNG" and image.mode == "RGB"


def test_checked_bytes_rejects_truncated_empty_and_missing(tmp_path):
    data = _encode(_smooth(64, 64))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CorruptImageError, match="cut.jpg"):
        checked_image_bytes(tmp_path / "cut.jpg")
    with pytest.raises(CorruptImageError, match="empty file"):
        checked_image_bytes(tmp_path / "empty.jpg")
    with pytest.raises(CorruptImageError, match="cannot read"):
        checked_image_bytes(tmp_path / "missing.jpg")
