"""The authors' heatmap pictures, pixel for pixel, without OpenCV.

The authors (Black et al., WACV 2022) draw a map as Stylianou et al. (2019) do:

1. upsample the token map bicubically (OpenCV ``INTER_CUBIC``, Keys a = -0.75) to the
   model's input size;
2. min-max normalise it after the upsampling, per map: ``m = (h - min) / (max - min)``;
3. ``uint8(255 * m)`` (truncation) indexes OpenCV's JET colormap;
4. the colour is added onto a greyscale copy of the image
   (``.2989 R + .587 G + .114 B``, scaled to [0, 1]);
5. the sum is divided by its maximum and truncated to ``uint8(255 * x)``.

:func:`paper_overlay` does exactly that for a map and an image of your own. OpenCV's
``COLORMAP_JET`` is written out as :data:`JET` (RGB order; OpenCV's ``applyColorMap``
returns the same colours in BGR order, which is why pictures made with it and shown
with matplotlib come out blue where they should be red).
"""

from __future__ import annotations

import numpy as np

__all__ = ["JET", "GREY_WEIGHTS", "jet_table", "minmax", "paper_overlay", "to_grey"]

# ITU-R BT.601 luma weights as the authors write them (MATLAB's rgb2gray).
GREY_WEIGHTS = (0.2989, 0.587, 0.114)


def jet_table() -> np.ndarray:
    """OpenCV's ``COLORMAP_JET`` as a [256, 3] uint8 table in **RGB** order.

    OpenCV defines JET as GNU Octave's ``jet(256)``: with ``x = i / 255``,

    * red   = clip(min(4x - 1.5, -4x + 4.5), 0, 1)
    * green = clip(min(4x - 0.5, -4x + 3.5), 0, 1)
    * blue  = clip(min(4x + 0.5, -4x + 2.5), 0, 1)

    stored as float32 and converted to uint8 with ``cvRound(255 * v)`` (round half to
    even). In units of 1/255 every value is an integer or a half, so the table is
    computed exactly here; OpenCV's float32 literal for entry 159 (blue, 1.5 / 255)
    lies just below the half and rounds to 1, which is kept. Equal to
    ``cv2.applyColorMap(arange(256), COLORMAP_JET)[..., ::-1]`` of OpenCV 4.10 and 5.0
    in all 768 values (tested).

    Returns:
      uint8 [256, 3], RGB.
    """
    i = np.arange(256, dtype=np.float64)
    # 255 * (piecewise-linear JET at x = i / 255): exact multiples of 1/2.
    r = np.clip(np.minimum(4 * i - 382.5, -4 * i + 1147.5), 0, 255)
    g = np.clip(np.minimum(4 * i - 127.5, -4 * i + 892.5), 0, 255)
    b = np.clip(np.minimum(4 * i + 127.5, -4 * i + 637.5), 0, 255)
    table = np.rint(np.stack([r, g, b], axis=-1))  # round half to even, as cvRound
    table[159, 2] = 1  # OpenCV's float32 literal is just below 1.5 / 255
    return table.astype(np.uint8)


JET: np.ndarray = jet_table()
JET.setflags(write=False)


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max normalisation to [0, 1] over the last two axes.

    Args:
      maps: [..., H, W].

    Returns:
      float64 [..., H, W] in [0, 1]; a constant map gives zeros (no division by 0).
    """
    maps = np.asarray(maps, np.float64)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1.0), 0.0)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Greyscale copy of an RGB uint8 image scaled to [0, 1]: [H, W, 3] -> [H, W]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {image.shape}")
    return image.astype(np.float64) @ np.asarray(GREY_WEIGHTS) / 255.0


def _upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from pairviz_jax.explain import upsample  # Keys a = -0.75, as cv2.INTER_CUBIC

    return np.asarray(upsample(heatmap, size), np.float64)


def paper_overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """Draws a similarity map over an image exactly as the authors' code does.

    Args:
      image: the image as the model saw it, uint8 RGB [H, W, 3] (e.g. resized to
        256 x 256 for the paper's model).
      heatmap: the map, either on the token grid [gh, gw] (upsampled here, bicubic
        with a = -0.75, to [H, W]) or already [H, W] (used as is).

    Returns:
      uint8 RGB [H, W, 3]: ``uint8(255 * s / max(s))`` with
      ``s = JET[uint8(255 * minmax(heatmap))] / 255 + grey(image)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 RGB [H, W, 3], got {image.dtype} {image.shape}")
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be [h, w], got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap contains NaN or Inf values")
    size = image.shape[:2]
    if heatmap.shape != size:
        heatmap = _upsample(heatmap, size)
    index = (255.0 * minmax(heatmap)).astype(np.uint8)  # truncation, as np.uint8(255 * m)
    colour = JET[index].astype(np.float64) / 255.0
    summed = colour + to_grey(image)[..., None]
    return (255.0 * (summed / summed.max())).astype(np.uint8)  # the maximum maps to 255
