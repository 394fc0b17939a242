"""Decoding and checking encoded images with PIL (no TensorFlow).

Every reader in ``pairviz_jax.data`` goes through :func:`decode_image`, and every builder
through :func:`checked_image_bytes`, so a corrupt or unreadable image is detected in one
place. Both raise :class:`CorruptImageError`; callers count the error and skip the image
with a warning (see ``pairviz_jax.data.pipeline``) instead of crashing a run.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

__all__ = ["CorruptImageError", "checked_image_bytes", "decode_image"]

# Pillow refuses larger images as potential decompression bombs; landmark photos can be
# big, but nothing in these datasets is anywhere near this many pixels.
_MAX_PIXELS = 20_000 * 20_000


class CorruptImageError(ValueError):
    """An image that cannot be decoded (truncated, not an image, unsupported mode)."""


def _open(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise CorruptImageError(f"{where}: not a readable image ({e})") from e
    if image.width * image.height > _MAX_PIXELS:
        raise CorruptImageError(f"{where}: {image.width}x{image.height} pixels is too large")
    return image


def decode_image(
    data: bytes | np.ndarray | Image.Image,
    *,
    min_size: tuple[int, int] | None = None,
    where: str = "image",
) -> Image.Image:
    """Decodes an image to an RGB PIL image.

    Args:
      data: encoded bytes (JPEG, PNG, ...), a uint8 array [H, W, 3] / [H, W, 1] / [H, W]
        or a PIL image.
      min_size: if given as (height, width), JPEGs are decoded at the smallest DCT scale
        (1/2, 1/4, 1/8) that is still at least this large, which is several times faster
        for large photos and loses nothing once the image is resized to that size.
      where: what to call the image in error messages (a file name or record id).

    Returns:
      An RGB ``PIL.Image.Image`` (grayscale, palette, CMYK and alpha images converted).

    Raises:
      CorruptImageError: if the data cannot be decoded.
    """
    if isinstance(data, Image.Image):
        image = data
    elif isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim not in (2, 3):
            raise CorruptImageError(
                f"{where}: expected a uint8 array [H, W] or [H, W, C], got {data.dtype} "
                f"{data.shape}"
            )
        if data.ndim == 3 and data.shape[-1] == 1:
            data = data[..., 0]
        image = Image.fromarray(data)
    elif isinstance(data, bytes | bytearray | memoryview):
        image = _open(bytes(data), where)
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", (int(min_size[1]), int(min_size[0])))
    else:
        raise CorruptImageError(f"{where}: expected bytes or a uint8 array, got {type(data)}")
    try:
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
    except Exception as e:
        raise CorruptImageError(f"{where}: cannot decode ({e})") from e
    return image


def checked_image_bytes(path: str | os.PathLike) -> bytes:
    """Reads an image file for a builder: fully decoded once, re-encoded only if needed.

    JPEG and PNG files that decode to 8-bit RGB are kept byte for byte. Anything else
    (grayscale, CMYK, palette, 16-bit, alpha, other formats) is converted to RGB and
    re-encoded (JPEG sources as JPEG at quality 95, others as PNG), so every stored image
    decodes to [H, W, 3] uint8.

    Args:
      path: an image file.

    Returns:
      Encoded JPEG or PNG bytes of an RGB image.

    Raises:
      CorruptImageError: if the file is missing, empty, truncated or not an image.
    """
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CorruptImageError(f"{where}: cannot read ({e})") from e
    if not data:
        raise CorruptImageError(f"{where}: empty file")
    image = _open(data, where)
    fmt, mode = image.format, image.mode
    if fmt == "JPEG":
        # Decoding at 1/8 scale still reads every entropy-coded byte, so truncation and
        # corrupt scans are caught, at a fraction of the cost of a full decode.
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
    try:
        image.load()
    except Exception as e:
        raise CorruptImageError(f"{where}: cannot decode ({e})") from e
    if fmt in ("JPEG", "PNG") and mode == "RGB":
        return data
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        rgb = image.convert("RGB")
    except Exception as e:
        raise CorruptImageError(f"{where}: cannot convert {mode} to RGB ({e})") from e
    out = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(out, format="JPEG", quality=95)
    else:
        rgb.save(out, format="PNG", compress_level=1)
    return out.getvalue()
