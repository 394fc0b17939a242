"""The embedded demo dataset: glyphs on cluttered backgrounds, with object masks.

Nothing is downloaded: every example is drawn on demand from (``seed``, split, index)
with matplotlib's bundled TrueType fonts (rasterised by PIL's FreeType), so the same
seed gives the same images on every machine with the same fonts and Pillow, and
"building" the dataset costs nothing (drawing all 3,840 examples of the default
64-px config takes a few seconds; :func:`materialize` does it eagerly).

Each example is one glyph (the object) in a random font, colour, size, position and
rotation, pasted on a cluttered background (a gentle gradient around mid grey, random
rectangles, ellipses and lines in muted colours, pixel noise). The glyph is a random
hue made dark or light enough to stand out from what lies under it; the clutter shares
the glyphs' sharp edges but not their contrast:

* ``image``: uint8 [S, S, 3];
* ``mask``: bool [S, S], the object mask: True exactly where the glyph's coverage is
  non-zero, so every pixel the glyph changed lies inside it;
* ``label``: int32 glyph identity; the train split's classes are 0..23, the test
  split's 24..47 (unseen in training, as the paper's retrieval benchmarks);
* ``id``: int64 index of the example in its split.

Classes interleave (index ``i`` has class ``i % num_classes``), so any prefix of a
split is class balanced. Normalisation for the demo (``preprocess.NORMALIZATION``):
mean 0.5, std 0.25 per channel (the 64-px train split measures mean 0.50, std 0.14:
the muted background dominates; the fixed values keep the glyphs within about +-2).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pairviz_jax.data.preprocess import to_unit_range

__all__ = [
    "DEFAULT_EXAMPLES_PER_CLASS",
    "DemoSource",
    "GLYPHS",
    "TEST_GLYPHS",
    "TRAIN_GLYPHS",
    "font_paths",
    "materialize",
    "render_example",
    "render_with_distractor",
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
# Channel range of the clutter's colours, and the least luminance difference between a
# glyph and the background under it.
_CLUTTER_RANGE = (0.3, 0.7)
_GLYPH_CONTRAST = 0.4


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
    """A cluttered background, float32 [size, size, 3] in [0, 1].

    A gentle colour gradient around mid grey, 4-10 random rectangles, ellipses and
    lines in muted colours (channels in [0.3, 0.7]) and pixel noise. The clutter has
    sharp edges and shapes like the glyphs' but less contrast than the glyph
    (``_GLYPH_CONTRAST``). With saturated backgrounds and clutter the demo's tiny ViT
    sits at the chance loss for most of its 10-minute budget: the mean-pooled
    embedding is dominated by background colour, which it first has to learn to ignore.
    """
    lo, hi = _CLUTTER_RANGE
    c0, c1 = 0.5 + rng.uniform(-0.1, 0.1, 3), 0.5 + rng.uniform(-0.1, 0.1, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta), 0, 1)
    base = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)
    canvas = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 11))):
        colour = tuple(int(v) for v in rng.integers(round(lo * 255), round(hi * 255) + 1, 3))
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
    out = to_unit_range(np.asarray(canvas))
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
    return to_unit_range(np.asarray(layer.crop(box)))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)


def _glyph_colour(rng: np.random.Generator, under: float) -> np.ndarray:
    """A colour that stands out from luminance ``under``: a random hue made dark enough
    (or light enough) that its luminance is ``_GLYPH_CONTRAST`` below (above) it."""
    hue = rng.uniform(0.05, 1, 3).astype(np.float32)
    can_dark, can_light = under - _GLYPH_CONTRAST > 0.0, under + _GLYPH_CONTRAST < 1.0
    dark = bool(rng.integers(0, 2)) if (can_dark and can_light) else can_dark
    if dark:  # scale towards black: luminance(colour) <= target
        target = rng.uniform(0.0, max(under - _GLYPH_CONTRAST, 0.0))
        colour = hue * min(target / float(_luminance(hue)), 1.0 / float(hue.max()))
    else:  # scale towards white: luminance(colour) >= target
        target = rng.uniform(min(under + _GLYPH_CONTRAST, 1.0), 1.0)
        k = (1.0 - target) / max(1.0 - float(_luminance(hue)), 1e-6)
        colour = 1.0 - (1.0 - hue) * min(k, 1.0 / float((1.0 - hue).max()))
    return colour.astype(np.float32)


def _place_glyph(
    rng: np.random.Generator,
    background: np.ndarray,
    glyph: str,
    box: tuple[int, int, int, int],
    size_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Draws a glyph's coverage and colour inside ``box`` of ``background``.

    Args:
      rng: the example's generator (consumed in a fixed order).
      background: float32 [S, S, 3], what the glyph is drawn on.
      glyph: the character.
      box: (top, left, height, width) in pixels that the glyph must fit in.
      size_range: font size as a fraction of S, drawn uniformly.

    Returns:
      ``(alpha, colour)``: float32 [S, S] coverage (zero outside the glyph) and float32 [3].
    """
    s = background.shape[0]
    y0, x0, bh, bw = box
    fonts = font_paths()
    font_path = fonts[int(rng.integers(0, len(fonts)))]
    font_size = max(8, int(rng.uniform(*size_range) * s))
    angle = float(rng.uniform(-30.0, 30.0))
    alpha = _glyph_alpha(glyph, font_path, font_size, angle)
    for _ in range(8):  # a wide glyph rotated: shrink to fit
        h, w = alpha.shape
        if h <= bh and w <= bw:
            break
        font_size = max(6, int(font_size * min(bh / h, bw / w) * 0.95))
        alpha = _glyph_alpha(glyph, font_path, font_size, angle)
    h, w = alpha.shape
    if h > bh or w > bw:
        raise ValueError(f"glyph {glyph!r} does not fit a {bh}x{bw} box at {s}px")
    top = y0 + int(rng.integers(0, bh - h + 1))
    left = x0 + int(rng.integers(0, bw - w + 1))
    region = background[top : top + h, left : left + w]
    covered = region[alpha > 0.5]
    # A glyph too small to cover any pixel by half (tiny images): contrast with its box.
    under = (covered if len(covered) else region.reshape(-1, region.shape[-1])).mean(axis=0)
    colour = _glyph_colour(rng, float(_luminance(under)))
    full = np.zeros((s, s), np.float32)
    full[top : top + h, left : left + w] = alpha
    return full, colour


def _composite(background: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return background * (1 - alpha[..., None]) + colour * alpha[..., None]


def _check(split: str, index: int, image_size: int) -> None:
    if split not in _SPLITS:
        raise ValueError(f"demo split must be one of {sorted(_SPLITS)}, got {split!r}")
    if image_size < 16:
        raise ValueError(f"demo image_size must be at least 16, got {image_size}")
    if index < 0:
        raise ValueError(f"demo index must be non-negative, got {index}")


def _label(split: str, cls: int) -> np.int32:
    return np.int32(cls + (0 if split == "train" else len(TRAIN_GLYPHS)))


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
    _check(split, index, image_size)
    split_code, glyphs = _SPLITS[split]
    rng = np.random.default_rng([seed, split_code, index])
    cls = index % len(glyphs)
    background = _background(rng, image_size)
    box = (0, 0, image_size, image_size)
    alpha, colour = _place_glyph(rng, background, glyphs[cls], box, (0.45, 0.85))
    image = _composite(background, alpha, colour) if draw_glyph else background
    return {
        "image": np.round(image * 255).astype(np.uint8),
        "mask": alpha > 0,
        "label": _label(split, cls),
        "id": np.int64(index),
    }


def render_with_distractor(
    split: str, index: int, *, image_size: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """Example ``index``'s glyph next to a *distractor* glyph of another class.

    For measuring whether a paired map finds what two images share: pair this image
    with another example of its class, and the glyph of its class is the shared object
    while the distractor is equally salient but shared with nothing. The two glyphs
    sit in opposite halves of the image (left/right or top/bottom, in random order),
    each at 0.45-0.6 of the image side, shrunk to fit its half; the background is drawn
    as for :func:`render_example`. Images are drawn from their own random streams
    (``render_example``'s with the same index are different images).

    Args:
      split, index, seed: as :func:`render_example`; the class is
        ``index % num_classes``, the distractor's another class of the same split.
      image_size: S, at least 32 (two glyphs side by side).

    Returns:
      a dict: ``image`` uint8 [S, S, 3], ``mask`` bool [S, S] (the class's glyph),
      ``distractor_mask`` bool [S, S], ``label`` int32, ``distractor_label`` int32,
      ``id`` int64; the two masks are disjoint.
    """
    _check(split, index, image_size)
    if image_size < 32:
        raise ValueError(f"demo images with a distractor need image_size >= 32, got {image_size}")
    split_code, glyphs = _SPLITS[split]
    rng = np.random.default_rng([seed, split_code, index, 2])
    n = len(glyphs)
    cls = index % n
    other = (cls + 1 + int(rng.integers(0, n - 1))) % n
    s = image_size
    half = s // 2
    boxes = [(0, 0, s, half), (0, half, s, s - half)]  # left, right
    if rng.random() < 0.5:
        boxes = [(0, 0, half, s), (half, 0, s - half, s)]  # top, bottom
    if rng.random() < 0.5:
        boxes = boxes[::-1]
    image = _background(rng, s)
    alpha, colour = _place_glyph(rng, image, glyphs[cls], boxes[0], (0.45, 0.6))
    image = _composite(image, alpha, colour)
    alpha_d, colour_d = _place_glyph(rng, image, glyphs[other], boxes[1], (0.45, 0.6))
    image = _composite(image, alpha_d, colour_d)
    return {
        "image": np.round(image * 255).astype(np.uint8),
        "mask": alpha > 0,
        "distractor_mask": alpha_d > 0,
        "label": _label(split, cls),
        "distractor_label": _label(split, other),
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
      a dict: ``image`` uint8 [N, S, S, 3], ``mask`` bool [N, S, S], ``label`` int32 [N],
      ``id`` int64 [N].
    """
    indices = range(len(source)) if indices is None else indices
    examples = [source[i] for i in indices]
    return {k: np.stack([e[k] for e in examples]) for k in ("image", "mask", "label", "id")}
