"""The embedded demo dataset: glyphs on cluttered backgrounds, with object masks.

Nothing is downloaded: every example is drawn on demand from (``seed``, split, index)
with matplotlib's bundled TrueType fonts (rasterised by PIL's FreeType), so the same
seed gives the same images on every machine with the same fonts and Pillow, and
"building" the dataset costs nothing (drawing all 3,840 examples of the default
64-px config takes a few seconds; :func:`materialize` does it eagerly).

Each example is one glyph (the object) in a random font, colour, size, position and
rotation, pasted on a cluttered background (a colour gradient, random rectangles,
ellipses and lines, pixel noise):

* ``image``: uint8 [S, S, 3];
* ``mask``: bool [S, S], the object mask: True exactly where the glyph's coverage is
  non-zero, so every pixel the glyph changed lies inside it;
* ``label``: int32 glyph identity; the train split's classes are 0..23, the test
  split's 24..47 (unseen in training, as the paper's retrieval benchmarks);
* ``id``: int64 index of the example in its split.

Classes interleave (index ``i`` has class ``i % num_classes``), so any prefix of a
split is class balanced. Normalisation for the demo (``preprocess.NORMALIZATION``):
mean 0.5, std 0.25 per channel, close to the measured statistics of the 64-px train
split (mean about 0.50, std about 0.26) and easy to remember.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "DEFAULT_EXAMPLES_PER_CLASS",
    "DemoSource",
    "GLYPHS",
    "TEST_GLYPHS",
    "TRAIN_GLYPHS",
    "font_paths",
    "materialize",
    "render_example",
]

# 48 glyphs that stay distinct under +-30 degree rotations and across fonts (no I/l/1,
# O/0, 6/9). Train and test classes are disjoint.
TRAIN_GLYPHS = "ACEGJLNQSUWY2468&?#ΓΘΞΣΨ"
TEST_GLYPHS = "KMPRTVXZBDFH357@$%§ΔΛΠΦΩ"
GLYPHS = TRAIN_GLYPHS + TEST_GLYPHS
DEFAULT_EXAMPLES_PER_CLASS = {"train": 128, "test": 32}

# matplotlib's bundled fonts with Latin and Greek coverage.
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
_SPLITS = {"train": (0, TRAIN_GLYPHS), "test": (1, TEST_GLYPHS)}


@functools.cache
def font_paths() -> tuple[str, ...]:
    """The bundled font files used (those of ``_FONT_FILES`` this matplotlib ships)."""
    root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    paths = tuple(
        os.path.join(root, f) for f in _FONT_FILES if os.path.isfile(os.path.join(root, f))
    )
    if not paths:
        raise ValueError(f"no demo fonts found in {root}; expected some of {_FONT_FILES}")
    return paths


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered background, float32 [size, size, 3] in [0, 1]."""
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta), 0, 1)
    base = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)
    canvas = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 11))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.5, 2) * size
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            width = max(1, int(rng.uniform(0.01, 0.05) * size))
            draw.line((x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h), fill=colour, width=width)
    out = np.asarray(canvas, np.float32) / 255.0
    out += rng.normal(0.0, 0.03, out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _glyph_alpha(glyph: str, font_path: str, font_size: int, angle: float) -> np.ndarray:
    """The glyph's coverage, float32 [h, w] in [0, 1], rotated and cropped to its box."""
    font = _font(font_path, font_size)
    left, top, right, bottom = font.getbbox(glyph)
    pad = 2
    layer = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(layer).text((pad - left, pad - top), glyph, fill=255, font=font)
    layer = layer.rotate(angle, resample=Image.BILINEAR, expand=True)
    box = layer.getbbox()
    if box is None:
        raise ValueError(f"glyph {glyph!r} renders empty in {font_path} at {font_size}px")
    return np.asarray(layer.crop(box), np.float32) / 255.0


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)


def render_example(
    split: str, index: int, *, image_size: int = 64, seed: int = 0, draw_glyph: bool = True
) -> dict[str, np.ndarray]:
    """Draws example ``index`` of ``split``; a pure function of its arguments.

    Args:
      split: ``"train"`` or ``"test"``.
      index: example index (non-negative); its class is ``index % num_classes``.
      image_size: S, the side of the square image in pixels (at least 16).
      seed: dataset seed.
      draw_glyph: False returns the same example's background alone (for tests of masks).

    Returns:
      ``{"image": uint8 [S, S, 3], "mask": bool [S, S], "label": int32, "id": int64}``.
    """
    if split not in _SPLITS:
        raise ValueError(f"demo split must be one of {sorted(_SPLITS)}, got {split!r}")
    if image_size < 16:
        raise ValueError(f"demo image_size must be at least 16, got {image_size}")
    if index < 0:
        raise ValueError(f"demo index must be non-negative, got {index}")
    split_code, glyphs = _SPLITS[split]
    rng = np.random.default_rng([seed, split_code, index])
    cls = index % len(glyphs)
    label = cls + (0 if split == "train" else len(TRAIN_GLYPHS))
    background = _background(rng, image_size)

    fonts = font_paths()
    font_path = fonts[int(rng.integers(0, len(fonts)))]
    font_size = max(8, int(rng.uniform(0.45, 0.85) * image_size))
    angle = float(rng.uniform(-30.0, 30.0))
    alpha = _glyph_alpha(glyphs[cls], font_path, font_size, angle)
    h, w = alpha.shape
    if max(h, w) > image_size:  # a wide glyph rotated: shrink to fit
        scale = image_size / max(h, w)
        font_size = max(6, int(font_size * scale * 0.95))
        alpha = _glyph_alpha(glyphs[cls], font_path, font_size, angle)
        h, w = alpha.shape
    top = int(rng.integers(0, image_size - h + 1))
    left = int(rng.integers(0, image_size - w + 1))

    # A colour that stands out from the background under the glyph.
    under = background[top : top + h, left : left + w][alpha > 0.5].mean(axis=0)
    colour = rng.uniform(0, 1, 3).astype(np.float32)
    for _ in range(16):
        if abs(float(_luminance(colour) - _luminance(under))) > 0.35:
            break
        colour = rng.uniform(0, 1, 3).astype(np.float32)
    else:
        colour = np.full(3, 0.0 if _luminance(under) > 0.5 else 1.0, np.float32)

    full_alpha = np.zeros((image_size, image_size), np.float32)
    full_alpha[top : top + h, left : left + w] = alpha
    image = background
    if draw_glyph:
        image = background * (1 - full_alpha[..., None]) + colour * full_alpha[..., None]
    return {
        "image": np.round(image * 255).astype(np.uint8),
        "mask": full_alpha > 0,
        "label": np.int32(label),
        "id": np.int64(index),
    }


class DemoSource:
    """Random-access source (grain ``RandomAccessDataSource`` protocol) of demo examples.

    Attributes:
      split: ``"train"`` or ``"test"``.
      image_size: side S of the square images.
      seed: dataset seed (independent of a pipeline's shuffling seed).
      examples_per_class: examples of each class; ``len = examples_per_class * 24``.
    """

    def __init__(
        self,
        split: str,
        *,
        image_size: int = 64,
        seed: int = 0,
        examples_per_class: int | None = None,
    ):
        if split not in _SPLITS:
            raise ValueError(f"demo split must be one of {sorted(_SPLITS)}, got {split!r}")
        if image_size < 16:
            raise ValueError(f"demo image_size must be at least 16, got {image_size}")
        self.split = split
        self.image_size = int(image_size)
        self.seed = int(seed)
        n = DEFAULT_EXAMPLES_PER_CLASS[split] if examples_per_class is None else examples_per_class
        if n <= 0:
            raise ValueError(f"examples_per_class must be positive, got {n}")
        self.examples_per_class = int(n)
        self.num_classes = len(_SPLITS[split][1])

    def __len__(self) -> int:
        return self.examples_per_class * self.num_classes

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"demo {self.split} index {index} out of range [0, {len(self)})")
        return render_example(self.split, index, image_size=self.image_size, seed=self.seed)

    def __repr__(self) -> str:
        return (
            f"DemoSource(split={self.split!r}, image_size={self.image_size}, seed={self.seed}, "
            f"examples_per_class={self.examples_per_class})"
        )


def materialize(source: DemoSource, indices: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Draws examples eagerly and stacks them.

    Args:
      source: a demo source.
      indices: which examples (default all).

    Returns:
      ``{"image": uint8 [N, S, S, 3], "mask": bool [N, S, S], "label": int32 [N],
      "id": int64 [N]}``.
    """
    indices = range(len(source)) if indices is None else indices
    examples = [source[i] for i in indices]
    return {k: np.stack([e[k] for e in examples]) for k in ("image", "mask", "label", "id")}
