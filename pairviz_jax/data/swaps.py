"""Swap-test triples: image A holds two pasted objects X and Y, partner B1 holds X, B2 holds Y.

A map of A that explains *this pair* must put its peak on X against B1 and on Y against B2
(``pairviz_jax.evaluate.swap``). Every triple is cut from the real photos of one half of
``data.photos`` (four photos per half, nothing downloaded):

* X and Y: the objects (``Photo.box``, edges jittered) of two different photos;
* A: a third photo (centre square) with X and Y pasted at random, non-overlapping places, each
  covering ``area_a`` of A;
* B1, B2: the same background for both, the fourth photo of the half or the ``GREY`` canvas
  (drawn per triple), with X (B1) or Y (B2) pasted at its own random place and scale, covering
  ``area_b`` of B.

The same cut of X is pasted into A and B1 (only its size differs), so the two partners differ
only in the object they share with A. Every triple is a pure function of its seed.

The halves: ``split="a"`` is the development half (every number tuned or looked at while
building); ``split="b"`` is held out, meant to be run once, at the end, to report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pairviz_jax.data import photos

__all__ = ["Triple", "make_triple", "make_triples", "stack_triples"]

GREY_NAME = "grey"


@dataclasses.dataclass(frozen=True)
class Triple:
    """One swap-test triple.

    Attributes:
      seed: what it was drawn from.
      objects: (X, Y): the photos the two objects were cut from.
      cuts: (top, left, height, width) of each cut in its photo, pixels.
      background_a: the photo under A.
      background_b: the photo under B1 and B2, or ``"grey"``.
      places_a: where X and Y lie in A, (top, left, height, width) each.
      places_b: where X lies in B1 and Y in B2.
      a: uint8 [S, S, 3] image A.
      partners: uint8 [2, S, S, 3] B1 and B2.
      a_masks: bool [2, S, S] X's and Y's pixels in A.
      b_masks: bool [2, S, S] X's pixels in B1, Y's in B2.
    """

    seed: tuple[int, ...]
    objects: tuple[str, str]
    cuts: tuple[tuple[int, int, int, int], ...]
    background_a: str
    background_b: str
    places_a: tuple[tuple[int, int, int, int], ...]
    places_b: tuple[tuple[int, int, int, int], ...]
    a: np.ndarray
    partners: np.ndarray
    a_masks: np.ndarray
    b_masks: np.ndarray

    @property
    def ids(self) -> tuple[str, ...]:
        """(X, Y, A's background, the partners' background)."""
        return (*self.objects, self.background_a, self.background_b)


def _paste(
    canvas: np.ndarray, crop: np.ndarray, place: tuple[int, int, int, int], shape: str
) -> np.ndarray:
    """Pastes ``crop`` resized to ``place`` into ``canvas`` (in place); its bool [S, S] mask."""
    top, left, h, w = place
    m = photos._shape_mask(h, w, shape)
    canvas[top : top + h, left : left + w][m] = photos._resize(crop, (h, w))[m]
    mask = np.zeros(canvas.shape[:2], bool)
    mask[top : top + h, left : left + w] = m
    return mask


def _places(rng, crops, size, area, shape) -> list[tuple[int, int, int, int]] | None:
    places: list[tuple[int, int, int, int]] = []
    for crop in crops:
        aspect = crop.shape[1] / crop.shape[0]
        place = photos._placement(rng, aspect, size, area, shape, places)
        if place is None:
            return None
        places.append(place)
    return places


def make_triple(
    seed: int | Sequence[int],
    size: int = 224,
    split: str = "a",
    area_a: tuple[float, float] = (1 / 8, 1 / 4),
    area_b: tuple[float, float] = (1 / 6, 1 / 3),
    shape: str = "box",
    jitter: float = 0.05,
) -> Triple:
    """One swap-test triple, a pure function of its arguments.

    Args:
      seed: an int or a sequence of ints (``make_triples`` uses ``(seed, i)``).
      size: S, the side of A, B1 and B2 in pixels.
      split: the photo half, ``"a"`` (development) or ``"b"`` (held out).
      area_a: each object's mask covers this fraction of A (inclusive bounds).
      area_b: the object's mask covers this fraction of its partner.
      shape: ``"box"`` or ``"ellipse"`` masks (as ``photos.make_pair``).
      jitter: each edge of a photo's object box moves by up to this fraction of the box.

    Returns:
      A ``Triple``: ``a`` uint8 [S, S, 3], ``partners`` [2, S, S, 3], ``a_masks`` and
      ``b_masks`` bool [2, S, S] (row 0: X, row 1: Y).
    """
    if split not in photos.SPLITS:
        raise ValueError(f"split={split!r}: the photo halves are 'a' and 'b'")
    if shape not in ("box", "ellipse"):
        raise ValueError(f"shape={shape!r}: expected 'box' or 'ellipse'")
    for name, area in (("area_a", area_a), ("area_b", area_b)):
        if not 0 < area[0] <= area[1] <= 0.5:
            raise ValueError(f"{name}={area!r}: expected 0 < low <= high <= 0.5")
    pool = photos.names(split)
    key = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    rng = np.random.default_rng([int(s) for s in key])
    for _ in range(100):
        chosen = [pool[i] for i in rng.permutation(len(pool))]
        x, y, back_a = chosen[:3]
        back_b = chosen[3] if len(chosen) > 3 and rng.uniform() < 0.5 else GREY_NAME
        cuts = [photos._cut(rng, n, jitter) for n in (x, y)]
        crops = [c for c, _ in cuts]
        places_a = _places(rng, crops, size, area_a, shape)
        places_b = [_places(rng, [c], size, area_b, shape) for c in crops]
        if places_a is not None and all(p is not None for p in places_b):
            break
    else:
        raise ValueError(f"no placement of two objects covering {area_a} of a {size}-px image")
    a = photos.square(photos.load(back_a), size)
    a_masks = np.stack([_paste(a, c, p, shape) for c, p in zip(crops, places_a, strict=True)])
    if back_b == GREY_NAME:
        canvas = np.empty((size, size, 3), np.uint8)
        canvas[:] = photos.GREY
    else:
        canvas = photos.square(photos.load(back_b), size)
    partners = np.stack([canvas.copy(), canvas.copy()])
    b_masks = np.stack(
        [_paste(partners[k], crops[k], places_b[k][0], shape) for k in range(2)]  # type: ignore[index]
    )
    return Triple(
        seed=key,
        objects=(x, y),
        cuts=tuple(c for _, c in cuts),
        background_a=back_a,
        background_b=back_b,
        places_a=tuple(places_a),
        places_b=tuple(p[0] for p in places_b),  # type: ignore[index]
        a=a,
        partners=partners,
        a_masks=a_masks,
        b_masks=b_masks,
    )


def make_triples(
    indices: Sequence[int] | int, seed: int = 0, split: str = "a", **kwargs
) -> list[Triple]:
    """Triples ``(seed, i)`` for i in ``indices`` (``range(n)`` for an int n); triple i is the
    same whatever else is drawn."""
    indices = range(indices) if isinstance(indices, int) else indices
    return [make_triple((seed, int(i)), split=split, **kwargs) for i in indices]


def stack_triples(triples: Sequence[Triple]) -> dict[str, np.ndarray]:
    """Triples as arrays: ``a`` uint8 [T, S, S, 3], ``partners`` [T, 2, S, S, 3], ``a_masks``
    and ``b_masks`` bool [T, 2, S, S]."""
    if not triples:
        raise ValueError("stack_triples: no triples")
    return {
        "a": np.stack([t.a for t in triples]),
        "partners": np.stack([t.partners for t in triples]),
        "a_masks": np.stack([t.a_masks for t in triples]),
        "b_masks": np.stack([t.b_masks for t in triples]),
    }
