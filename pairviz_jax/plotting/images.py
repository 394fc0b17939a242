"""Reading the images a user points ``visualize.py`` at, whatever their mode.

:func:`load_image` returns 8-bit RGB for every mode Pillow opens: greyscale (``L``,
``1``), palette (``P``, with or without transparency), 16- and 32-bit greyscale
(``I;16``, ``I``; scaled from their full range to 8 bits, not clipped), float (``F``),
CMYK, YCbCr, LAB, HSV and anything with alpha (composited onto white). EXIF
orientation is applied. Every failure is an :class:`InputError` whose one-line message
starts with the file's name. Float images with NaN or Inf pixels are scaled by their
finite pixels (Inf -> the finite maximum, -Inf and NaN -> the finite minimum) with a
one-line warning on stderr: one +Inf patch no longer turns the rest black.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pairviz_jax.runs.errors import InputError

__all__ = ["InputError", "load_image", "to_rgb"]


def _finite(x: np.ndarray, where: str | None) -> np.ndarray:
    """NaN/Inf pixels -> the finite range's ends, with a warning naming the image."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    finite = x[~bad]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    print(
        f"warning: {where or 'image'}: {int(bad.sum())} of {x.size} pixels are NaN or Inf; "
        f"drawn as the finite range's ends ({lo:g}, {hi:g})",
        file=sys.stderr,
    )
    return np.where(np.isposinf(x), hi, np.where(bad, lo, x))


def _from_wide_grey(image: Image.Image, where: str | None = None) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit ``L``, scaled, not clipped."""
    x = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        x = _finite(x, where)
        top = 1.0 if x.size and x.max() <= 1.0 else 255.0
        x = np.clip(x, 0.0, top) * (255.0 / top)
    elif image.mode.startswith("I;16") or (x.size and x.max() > 255):
        # 16-bit data (Pillow opens 16-bit PNGs as I;16 or I): full range 0..65535.
        top = 65535.0 if not x.size or x.max() <= 65535 else float(x.max())
        x = np.clip(x, 0.0, top) * (255.0 / top)
    return Image.fromarray(np.rint(x).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, where: str | None = None) -> Image.Image:
    """Converts a PIL image of any mode to 8-bit RGB (alpha composited onto white).

    ``where`` names the image in the warning about NaN/Inf pixels of float images.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _from_wide_grey(image, where).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as 8-bit RGB.

    Args:
      path: an image file Pillow can read (PNG, JPEG, GIF (first frame), TIFF, BMP, ...).

    Returns:
      uint8 [H, W, 3].

    Raises:
      InputError: a missing file, a directory, an unreadable, truncated or corrupt
        image; the message is one line starting with the path.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise InputError(f"{where}: no such file")
    if os.path.isdir(where):
        raise InputError(f"{where}: is a directory, not an image")
    try:
        with Image.open(where) as image:
            image.load()
            image = ImageOps.exif_transpose(image) or image
            rgb = to_rgb(image, where)
            out = np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        raise InputError(f"{where}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{where}: too large to decode ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        msg = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"{where}: corrupt or truncated image ({msg})") from None
    if out.ndim != 3 or out.shape[-1] != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError(f"{where}: decoded to an empty or malformed image {out.shape}")
    return np.ascontiguousarray(out)
