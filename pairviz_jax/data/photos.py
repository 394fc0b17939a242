"""Real photographs shipped inside scikit-image, scikit-learn and matplotlib; copy-paste pairs.

Nothing is downloaded: every photo is a file inside an installed package. scikit-image's other
sample images (``skimage.data.eagle``, ``lily``, ``cells3d``, ...) are fetched on demand by
pooch and are not used. matplotlib is a dependency of pairviz-jax; scikit-image and
scikit-learn are optional (the ``photos`` extra): ``load`` names the package to install when
one is missing.

The eight colour photographs of a scene or object (H x W):

==============  ============  =========  =====  ==========================================
name            package       size       half   object (``box``)
==============  ============  =========  =====  ==========================================
astronaut       scikit-image  512 x 512  a      the astronaut, head and suit
coffee          scikit-image  400 x 600  a      cup and saucer
motorcycle      scikit-image  500 x 741  a      the motorcycle
china           scikit-learn  427 x 640  a      the pagoda
chelsea         scikit-image  300 x 451  b      the cat's face
rocket          scikit-image  427 x 640  b      the rocket on its pad
flower          scikit-learn  427 x 640  b      the dahlia
grace_hopper    matplotlib    600 x 512  b      Grace Hopper, face and cap
==============  ============  =========  =====  ==========================================

Left out: greyscale images (camera, coins, moon, page, text, brick, grass, gravel, ...): in a
copy-paste pair a grey object on a colour photo (or the reverse) is found by its colour alone,
and DINOv2 and CLIP were trained on colour; scientific images (hubble_deep_field, retina,
immunohistochemistry) and synthetic ones (color, logo, chessboard, the matplotlib logo and
gift-box icon); ``motorcycle_right``, a near copy of ``motorcycle_left``.

The two halves (``split="a"`` / ``"b"``) are disjoint and fixed (one portrait, one animal or
flower-like close-up, ... in each), so a method tuned on one half is reported on the other.

Copy-paste pairs (``make_pair``): A is an object cut from one photo (its hand-set ``box``,
edges jittered), alone on a grey canvas; B is another photo (centre square) with the object
pasted at a random place and scale covering 1/6 to 1/3 of B; the distractor variant pastes a
second object, from a third photo of the same half, elsewhere in B (the two never overlap).
The object masks are rectangles (``shape="box"``) or the ellipses inscribed in them
(``shape="ellipse"``, less of the source photo's background). Every pair is a pure function
of its seed. With a distractor, the same B has two partners, one per pasted object:
``pair.partners`` [K, S, S, 3] and ``pair.b_masks`` [K, S, S] (pair sensitivity).

``python -m pairviz_jax.data.photos --write DIR`` writes image files to try the commands on
(:func:`write`): the docs' pair ``cat.png`` (docs/models.md) / ``coffee_with_cat.png`` and a gallery
``gallery/<photo>/<k>.png`` labelled by class folder.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "GREY",
    "PHOTOS",
    "Pair",
    "Pasted",
    "Photo",
    "available",
    "load",
    "make_pair",
    "make_pairs",
    "names",
    "path",
    "square",
    "stack",
]

# ImageNet's mean colour: normalised with ImageNet's mean and std it is ~0 in every channel.
GREY = (124, 116, 104)
SPLITS = ("a", "b")
_PIP_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


@dataclasses.dataclass(frozen=True)
class Photo:
    """A bundled photo: where it lives and its main object.

    Attributes:
      name: the photo's id.
      package: the import name of the package that ships it.
      path: the file, relative to the package's folder (``mpl-data`` for matplotlib).
      split: the half it belongs to, ``"a"`` or ``"b"``.
      box: the main object, (top, left, bottom, right) as fractions of the height and width.
      what: the object in words.
    """

    name: str
    package: str
    path: str
    split: str
    box: tuple[float, float, float, float]
    what: str


PHOTOS = (
    Photo("astronaut", "skimage", "data/astronaut.png", "a", (0.0, 0.1, 0.72, 0.7), "astronaut"),
    Photo("coffee", "skimage", "data/coffee.png", "a", (0.0, 0.1, 1.0, 0.82), "cup and saucer"),
    Photo(
        "motorcycle",
        "skimage",
        "data/motorcycle_left.png",
        "a",
        (0.35, 0.08, 0.97, 0.92),
        "motorcycle",
    ),
    Photo("china", "sklearn", "datasets/images/china.jpg", "a", (0.06, 0.08, 1.0, 0.58), "pagoda"),
    Photo("chelsea", "skimage", "data/chelsea.png", "b", (0.1, 0.22, 0.97, 0.88), "cat's face"),
    Photo("rocket", "skimage", "data/rocket.jpg", "b", (0.25, 0.36, 1.0, 0.66), "rocket"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "b", (0.2, 0.26, 0.84, 0.7), "dahlia"),
    Photo(
        "grace_hopper",
        "matplotlib",
        "sample_data/grace_hopper.jpg",
        "b",
        (0.1, 0.28, 0.7, 0.75),
        "Grace Hopper",
    ),
)
_BY_NAME = {p.name: p for p in PHOTOS}


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r}: expected 'a', 'b' or None (all photos)")


def names(split: str | None = None) -> list[str]:
    """The photo ids, of one half (``"a"`` / ``"b"``) or all (``None``)."""
    _check_split(split)
    return [p.name for p in PHOTOS if split is None or p.split == split]


def _photo(name: str) -> Photo:
    if name not in _BY_NAME:
        raise ValueError(f"photo {name!r}: unknown; expected one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def _package_dir(package: str) -> str | None:
    if package == "matplotlib":
        import matplotlib

        return matplotlib.get_data_path()
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def path(name: str) -> str:
    """The file of photo ``name``; ImportError naming the package when it is not installed."""
    photo = _photo(name)
    folder = _package_dir(photo.package)
    if folder is None:
        pip = _PIP_NAMES[photo.package]
        raise ImportError(
            f"photo {name!r} ships with {pip}, which is not installed "
            f"(pip install {pip}, or pairviz-jax[photos])"
        )
    file = os.path.join(folder, photo.path)
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"photo {name!r}: {file} is missing from the installed {_PIP_NAMES[photo.package]}"
        )
    return file


def available(split: str | None = None) -> list[str]:
    """The photo ids (of ``split``) whose package is installed."""
    out = []
    for name in names(split):
        try:
            path(name)
        except (ImportError, FileNotFoundError):
            continue
        out.append(name)
    return out


@functools.cache
def _load(name: str) -> np.ndarray:
    with Image.open(path(name)) as im:
        image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    image.flags.writeable = False
    return image


def load(name: str) -> np.ndarray:
    """Photo ``name`` as uint8 [H, W, 3] (read-only; cached)."""
    return _load(name)


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [H, W, 3] with PIL's bicubic filter (antialiased when shrinking)."""
    if image.shape[:2] == tuple(hw):
        return np.array(image)
    out = Image.fromarray(np.ascontiguousarray(image)).resize(
        (hw[1], hw[0]), Image.Resampling.BICUBIC
    )
    return np.array(out, dtype=np.uint8)


def square(image: np.ndarray, size: int) -> np.ndarray:
    """The centre square of ``image`` [H, W, 3] resized to uint8 [size, size, 3]."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return _resize(image[top : top + s, left : left + s], (size, size))


# --------------------------------------------------------------------------- pairs


@dataclasses.dataclass(frozen=True)
class Pasted:
    """One object pasted into B.

    Attributes:
      photo: the photo it was cut from.
      box: the cut in that photo, (top, left, height, width) in pixels.
      place: where it lies in B, (top, left, height, width) in pixels.
      image: uint8 [S, S, 3] the object alone on a ``GREY`` canvas: its partner image (A).
      mask: bool [S, S] the object's pixels in ``image``.
      mask_b: bool [S, S] the object's pixels in B.
    """

    photo: str
    box: tuple[int, int, int, int]
    place: tuple[int, int, int, int]
    image: np.ndarray
    mask: np.ndarray
    mask_b: np.ndarray


@dataclasses.dataclass(frozen=True)
class Pair:
    """A copy-paste pair: A (the shared object) and B (a photo with it pasted in).

    Attributes:
      seed: what the pair was drawn from.
      background: the photo under B.
      b: uint8 [S, S, 3] image B.
      objects: the shared object first, then the distractor (if any).
    """

    seed: tuple[int, ...]
    background: str
    b: np.ndarray
    objects: tuple[Pasted, ...]

    @property
    def a(self) -> np.ndarray:
        """uint8 [S, S, 3] image A: the shared object alone."""
        return self.objects[0].image

    @property
    def a_mask(self) -> np.ndarray:
        """bool [S, S] the object's pixels in A."""
        return self.objects[0].mask

    @property
    def b_mask(self) -> np.ndarray:
        """bool [S, S] the shared object's pixels in B."""
        return self.objects[0].mask_b

    @property
    def partners(self) -> np.ndarray:
        """uint8 [K, S, S, 3] a partner image per pasted object (K = 1, or 2 with a distractor)."""
        return np.stack([o.image for o in self.objects])

    @property
    def partner_masks(self) -> np.ndarray:
        """bool [K, S, S] each partner's object mask."""
        return np.stack([o.mask for o in self.objects])

    @property
    def b_masks(self) -> np.ndarray:
        """bool [K, S, S] where each object lies in B (row k belongs to ``partners[k]``)."""
        return np.stack([o.mask_b for o in self.objects])

    @property
    def ids(self) -> tuple[str, ...]:
        """(object photo, background photo[, distractor photo])."""
        return (self.objects[0].photo, self.background, *[o.photo for o in self.objects[1:]])


def _shape_mask(h: int, w: int, shape: str) -> np.ndarray:
    """bool [h, w]: the whole rectangle, or the ellipse inscribed in it (pixel centres)."""
    if shape == "box":
        return np.ones((h, w), bool)
    y = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    x = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    return y[:, None] ** 2 + x[None, :] ** 2 <= 1.0


def _cut(rng: np.random.Generator, name: str, jitter: float) -> tuple[np.ndarray, tuple]:
    """The object of photo ``name``: its box with each edge moved by up to ``jitter`` of a side."""
    image = load(name)
    H, W = image.shape[:2]
    t, l, b, r = _photo(name).box
    dh, dw = (b - t) * jitter, (r - l) * jitter
    t, b = np.clip([t, b] + rng.uniform(-dh, dh, 2), 0.0, 1.0)
    l, r = np.clip([l, r] + rng.uniform(-dw, dw, 2), 0.0, 1.0)
    top, left = int(round(t * H)), int(round(l * W))
    height, width = int(round(b * H)) - top, int(round(r * W)) - left
    return image[top : top + height, left : left + width], (top, left, height, width)


def _partner(crop: np.ndarray, size: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """The object alone: scaled so its longer side is ``size``, centred on a grey canvas."""
    h, w = crop.shape[:2]
    k = size / max(h, w)
    oh, ow = max(1, min(size, round(h * k))), max(1, min(size, round(w * k)))
    top, left = (size - oh) // 2, (size - ow) // 2
    image = np.empty((size, size, 3), np.uint8)
    image[:] = GREY
    mask = np.zeros((size, size), bool)
    obj, m = _resize(crop, (oh, ow)), _shape_mask(oh, ow, shape)
    image[top : top + oh, left : left + ow][m] = obj[m]
    mask[top : top + oh, left : left + ow] = m
    return image, mask


def _overlaps(p: tuple[int, int, int, int], q: tuple[int, int, int, int]) -> bool:
    return p[0] < q[0] + q[2] and q[0] < p[0] + p[2] and p[1] < q[1] + q[3] and q[1] < p[1] + p[3]


def _placement(
    rng: np.random.Generator,
    aspect: float,
    size: int,
    area: tuple[float, float],
    shape: str,
    taken: Sequence[tuple[int, int, int, int]],
    tries: int = 200,
) -> tuple[int, int, int, int] | None:
    """A random (top, left, h, w) whose mask covers ``area`` of B and avoids ``taken``."""
    fill = 1.0 if shape == "box" else math.pi / 4
    for _ in range(tries):
        f = rng.uniform(*area)
        h = int(round(math.sqrt(f * size * size / fill / aspect)))
        w = int(round(h * aspect))
        if not (0 < h <= size and 0 < w <= size):
            continue
        covered = _shape_mask(h, w, shape).sum() / (size * size)
        if not area[0] <= covered <= area[1]:
            continue
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        place = (top, left, h, w)
        if not any(_overlaps(place, q) for q in taken):
            return place
    return None


def make_pair(
    seed: int | Sequence[int],
    size: int = 224,
    split: str | None = None,
    distractor: bool = False,
    area: tuple[float, float] = (1 / 6, 1 / 3),
    shape: str = "box",
    jitter: float = 0.05,
) -> Pair:
    """One copy-paste pair, a pure function of its arguments.

    Args:
      seed: an int or a sequence of ints (``make_pairs`` uses ``(seed, i)``).
      size: S, the side of A and B in pixels.
      split: draw the photos from half ``"a"`` or ``"b"``, or from all (None).
      distractor: also paste an object from a third photo, not overlapping the first.
      area: each pasted mask covers this fraction of B (inclusive bounds).
      shape: ``"box"`` (rectangular masks) or ``"ellipse"`` (the inscribed ellipse).
      jitter: each edge of a photo's object box moves by up to this fraction of the box.

    Returns:
      A ``Pair``; ``pair.a``, ``pair.b`` uint8 [S, S, 3], ``pair.a_mask``, ``pair.b_mask`` bool
      [S, S]; with a distractor ``pair.partners`` [2, S, S, 3] and ``pair.b_masks`` [2, S, S].
    """
    if shape not in ("box", "ellipse"):
        raise ValueError(f"shape={shape!r}: expected 'box' or 'ellipse'")
    if not 0 < area[0] <= area[1] <= 0.5:
        raise ValueError(f"area={area!r}: expected 0 < low <= high <= 0.5")
    pool = names(split)
    k = 3 if distractor else 2
    if len(pool) < k:
        raise ValueError(f"split={split!r} has {len(pool)} photos; a pair needs {k}")
    key = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    rng = np.random.default_rng([int(s) for s in key])
    for _ in range(100):
        chosen = [pool[i] for i in rng.permutation(len(pool))[:k]]
        cuts = [_cut(rng, n, jitter) for n in (chosen[0], *chosen[2:])]
        places: list[tuple[int, int, int, int]] = []
        for crop, _ in cuts:
            place = _placement(rng, crop.shape[1] / crop.shape[0], size, area, shape, places)
            if place is None:
                break
            places.append(place)
        if len(places) == len(cuts):
            break
    else:
        raise ValueError(f"no placement of {k - 1} objects covering {area} of a {size}-px image")
    b = square(load(chosen[1]), size)
    objects = []
    for (crop, box), place, photo in zip(cuts, places, (chosen[0], *chosen[2:]), strict=True):
        top, left, h, w = place
        m = _shape_mask(h, w, shape)
        b[top : top + h, left : left + w][m] = _resize(crop, (h, w))[m]
        mask_b = np.zeros((size, size), bool)
        mask_b[top : top + h, left : left + w] = m
        image, mask = _partner(crop, size, shape)
        objects.append(Pasted(photo, box, place, image, mask, mask_b))
    return Pair(key, chosen[1], b, tuple(objects))


def make_pairs(n: int, seed: int = 0, **kwargs) -> list[Pair]:
    """``n`` pairs; pair ``i`` is ``make_pair((seed, i), **kwargs)`` (the same for every ``n``)."""
    return [make_pair((seed, i), **kwargs) for i in range(n)]


def stack(pairs: Sequence[Pair]) -> dict[str, np.ndarray]:
    """Pairs as arrays (all pairs alike: same size, all with or all without a distractor).

    Returns:
      ``a`` uint8 [N, S, S, 3], ``a_mask`` bool [N, S, S], ``b`` uint8 [N, S, S, 3],
      ``b_mask`` bool [N, S, S], ``partners`` uint8 [N, K, S, S, 3], ``partner_masks`` and
      ``b_masks`` bool [N, K, S, S] (object k of B belongs to partner k).
    """
    if not pairs:
        raise ValueError("stack: no pairs")
    ks = {len(p.objects) for p in pairs}
    if len(ks) != 1:
        raise ValueError("stack: pairs with and without a distractor cannot be stacked")
    return {
        "a": np.stack([p.a for p in pairs]),
        "a_mask": np.stack([p.a_mask for p in pairs]),
        "b": np.stack([p.b for p in pairs]),
        "b_mask": np.stack([p.b_mask for p in pairs]),
        "partners": np.stack([p.partners for p in pairs]),
        "partner_masks": np.stack([p.partner_masks for p in pairs]),
        "b_masks": np.stack([p.b_masks for p in pairs]),
    }


# ------------------------------------------------------------------------------- files for the docs

README_PAIR = ("chelsea", "coffee")  # the docs' pair: chelsea's cat pasted into coffee


def readme_pair(size: int = 224) -> Pair:
    """The first seed's pair (with a distractor) that cuts ``chelsea``'s cat into ``coffee``."""
    for seed in range(200):
        pair = make_pair(seed, size=size, distractor=True)
        if pair.ids[:2] == README_PAIR:
            return pair
    raise ValueError("no chelsea -> coffee pair among the first 200 seeds")


def write(folder: str, size: int = 224, per_object: int = 2) -> list[str]:
    """Writes real-photo images to try the commands on (PNG files, ``size`` px squares).

    * ``cat.png``, ``coffee_with_cat.png``: the docs' pair (:func:`readme_pair`);
    * ``gallery/<photo>/<k>.png``: a gallery labelled by class folder: for every photo,
      ``per_object`` copy-paste B images with its object pasted into another photo
      (``make_pair`` seeds ``(7, i)``) and its object alone (``0.png``).

    Returns:
      The paths written.
    """
    written = []

    def save(image, *parts):
        path = os.path.join(folder, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.asarray(image, np.uint8)).save(path)
        written.append(path)

    pair = readme_pair(size)
    save(pair.a, "cat.png")
    save(pair.b, "coffee_with_cat.png")
    counts: dict[str, int] = {}
    for i in range(200):
        if all(counts.get(n, 0) > per_object for n in names()):
            break
        p = make_pair((7, i), size=size)
        k = counts.get(p.ids[0], 0)
        if k > per_object:
            continue
        save(p.a if k == 0 else p.b, "gallery", p.ids[0], f"{k}.png")
        counts[p.ids[0]] = k + 1
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pairviz_jax.data.photos --write DIR [--size S]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m pairviz_jax.data.photos",
        description="Write real-photo images (the docs' pair and a labelled gallery).",
    )
    p.add_argument("--write", metavar="DIR", required=True, help="folder to write into")
    p.add_argument("--size", type=int, default=224, help="side of every image in pixels")
    args = p.parse_args(argv)
    if args.size < 16:
        p.error(f"--size {args.size}: expected at least 16 pixels")
    if os.path.exists(args.write) and not os.path.isdir(args.write):
        p.error(f"--write {args.write}: a file; expected a folder")
    try:
        paths = write(args.write, args.size)
    except (ImportError, OSError) as e:
        print(f"{p.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} images to {args.write} ({paths[0]}, {paths[1]}, gallery/...)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
