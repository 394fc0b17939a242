"""Image preprocessing: training augmentation, evaluation resize and normalisation.

Two separate paths, as in the paper's setup:

* :func:`eval_resize` — the authors' input: resize the whole image to ``image_size``
  (256 x 256 in the paper) without cropping.
* :func:`train_augment` — random-resized-crop (Inception style: a box of random area
  fraction ``scale`` and aspect ratio ``ratio``) to ``image_size``, then a random
  horizontal flip.

Both return uint8 images [H, W, 3]; an object ``mask`` [H, W] (the demo dataset's) is
transformed with the same geometry. :func:`normalize` maps uint8 images to the model's
float input, ``(x / 255 - mean) / std`` per channel, with the per-dataset values of
:data:`NORMALIZATION`. It accepts numpy or jax arrays, so it can run inside a jitted
step on device (transferring uint8 is 4x cheaper than float32). :func:`model_input` is
:func:`normalize` or, for a model without mean/std, :func:`to_unit_range` (``x / 255``):
the one place of the package where images are scaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATION",
    "eval_resize",
    "model_input",
    "normalize",
    "random_resized_crop_box",
    "to_unit_range",
    "train_augment",
]

# ImageNet statistics, used by the authors for Hotels-50k and GLDv2.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (mean, std) per RGB channel, for images scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # The authors' SOP statistics.
    "sop": ((0.5807, 0.5396, 0.5044), (0.2901, 0.2974, 0.3095)),
    "tfds_sop": ((0.5807, 0.5396, 0.5044), (0.2901, 0.2974, 0.3095)),
    "hotels50k": (IMAGENET_MEAN, IMAGENET_STD),
    "gldv2_clean": (IMAGENET_MEAN, IMAGENET_STD),
    "image_folder": (IMAGENET_MEAN, IMAGENET_STD),
    # Measured on the demo's 64-px train split (seed 0), rounded; see pairviz_jax.data.demo.
    "demo": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair; raises on non-positive sizes."""
    if isinstance(image_size, int | np.integer):
        h = w = int(image_size)
    else:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
        h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h, w


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    return Image.fromarray(image)


def _mask_pil(mask: np.ndarray, image: Image.Image) -> Image.Image:
    mask = np.asarray(mask)
    if mask.shape != (image.height, image.width):
        raise ValueError(
            f"mask must be [H, W] = {(image.height, image.width)} like its image, got {mask.shape}"
        )
    return Image.fromarray((mask > 0).astype(np.uint8) * 255)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """Samples an Inception-style crop box.

    The area fraction is uniform in ``scale`` and the aspect ratio (w / h) log-uniform in
    ``ratio``; after ``attempts`` boxes that do not fit, the central crop with the ratio
    clamped to ``ratio`` is returned.

    Args:
      rng: numpy random generator.
      height: image height in pixels.
      width: image width in pixels.
      scale: (min, max) fraction of the image area.
      ratio: (min, max) aspect ratio width / height.
      attempts: boxes to try before falling back to the centre crop.

    Returns:
      ``(top, left, crop_height, crop_width)`` in pixels, inside the image.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def train_augment(
    image: Image.Image | np.ndarray,
    rng: np.random.Generator,
    *,
    image_size: int | Sequence[int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random-resized-crop to ``image_size`` and a random horizontal flip (p = 0.5).

    Args:
      image: RGB PIL image or uint8 array [H, W, 3].
      rng: numpy random generator; the same state gives the same crop and flip.
      image_size: output size, an int or (height, width).
      scale: area fraction range of the crop (see :func:`random_resized_crop_box`).
      ratio: aspect ratio range of the crop.
      flip: whether to flip horizontally with probability 0.5.
      mask: optional object mask [H, W] (bool or 0/1); cropped and flipped like the image.

    Returns:
      ``(image uint8 [h, w, 3], mask bool [h, w] or None)``.
    """
    out_h, out_w = _size(image_size)
    pil = _as_pil(image)
    top, left, h, w = random_resized_crop_box(rng, pil.height, pil.width, scale=scale, ratio=ratio)
    box = (left, top, left + w, top + h)
    out = np.asarray(pil.resize((out_w, out_h), Image.BILINEAR, box=box, reducing_gap=3.0))
    out_mask = None
    if mask is not None:
        m = _mask_pil(mask, pil).resize((out_w, out_h), Image.NEAREST, box=box)
        out_mask = np.asarray(m) > 127
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
        if out_mask is not None:
            out_mask = out_mask[:, ::-1]
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out_mask is not None:
        out_mask = np.ascontiguousarray(out_mask)
    return out, out_mask


def eval_resize(
    image: Image.Image | np.ndarray,
    *,
    image_size: int | Sequence[int],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resizes the whole image to ``image_size`` (no crop), bilinear with antialiasing.

    Args:
      image: RGB PIL image or uint8 array [H, W, 3].
      image_size: output size, an int or (height, width).
      mask: optional object mask [H, W]; resized with nearest neighbour.

    Returns:
      ``(image uint8 [h, w, 3], mask bool [h, w] or None)``.
    """
    out_h, out_w = _size(image_size)
    pil = _as_pil(image)
    if pil.size == (out_w, out_h):
        out = np.asarray(pil)
    else:
        out = np.asarray(pil.resize((out_w, out_h), Image.BILINEAR, reducing_gap=3.0))
    out_mask = None
    if mask is not None:
        m = _mask_pil(mask, pil)
        if m.size != (out_w, out_h):
            m = m.resize((out_w, out_h), Image.NEAREST)
        out_mask = np.asarray(m) > 127
    return np.ascontiguousarray(out, dtype=np.uint8), out_mask


def normalize(images, mean: Sequence[float] | str, std: Sequence[float] | None = None):
    """Scales uint8 images to [0, 1], then standardises each channel.

    Args:
      images: uint8 (or float in [0, 255]) numpy or jax array [..., H, W, 3].
      mean: per-channel mean of [0, 1] images, or a dataset name of :data:`NORMALIZATION`.
      std: per-channel standard deviation (omitted when ``mean`` is a dataset name).

    Returns:
      float32 array [..., H, W, 3] of the same array type: ``(images / 255 - mean) / std``.
    """
    if isinstance(mean, str):
        if mean not in NORMALIZATION:
            raise ValueError(
                f"no normalisation for dataset {mean!r}; known: {sorted(NORMALIZATION)}"
            )
        if std is not None:
            raise ValueError("pass std only with an explicit mean, not with a dataset name")
        mean, std = NORMALIZATION[mean]
    if std is None:
        raise ValueError("std is required with an explicit mean")
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if images.shape[-1] != mean.shape[-1]:
        raise ValueError(f"images must be [..., H, W, {mean.shape[-1]}], got {images.shape}")
    return (to_unit_range(images) - mean) / std


def to_unit_range(images):
    """uint8 (or float in [0, 255]) numpy or jax array -> float32 in [0, 1]: ``images / 255``."""
    return images.astype(np.float32) / np.float32(255.0)


def model_input(images, mean: Sequence[float] | str | None, std: Sequence[float] | None = None):
    """uint8 images [..., H, W, 3] as a model's input (numpy or jax, same array type).

    Args:
      images: uint8 [..., H, W, 3].
      mean, std: as :func:`normalize`; ``mean=None``: the model takes ``x / 255`` only.

    Returns:
      float32 [..., H, W, 3]: ``(x / 255 - mean) / std``, or ``x / 255``.
    """
    if mean is None:
        return to_unit_range(images)
    return normalize(images, mean, std)
