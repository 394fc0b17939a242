"""``pairviz_jax.data.photos``: the bundled photographs and the copy-paste pairs."""

from __future__ import annotations

import numpy as np
import pytest

from pairviz_jax.data import photos
from tests import inputs

SIZES = {
    "astronaut": (512, 512), "coffee": (400, 600), "motorcycle": (500, 741),
    "china": (427, 640), "chelsea": (300, 451), "rocket": (427, 640),
    "flower": (427, 640), "grace_hopper": (600, 512),
}  # fmt: skip
SEEDS = range(12)


@pytest.fixture(scope="module")
def all_photos():
    missing = sorted(set(photos.names()) - set(photos.available()))
    if missing:
        inputs.missing(f"photos {missing} need scikit-image / scikit-learn (the photos extra)")


def test_names_and_halves():
    assert photos.names() == list(SIZES)
    a, b = set(photos.names("a")), set(photos.names("b"))
    assert a and b and not a & b and a | b == set(photos.names())
    assert len(a) == len(b) == 4
    with pytest.raises(ValueError, match="split='c'"):
        photos.names("c")


@pytest.mark.parametrize("name", list(SIZES))
def test_each_photo_loads_as_uint8_rgb(all_photos, name):
    image = photos.load(name)
    assert image.dtype == np.uint8 and image.shape == (*SIZES[name], 3)
    assert not image.flags.writeable
    # A colour photograph: the channels differ, and it is not a flat or near-binary image.
    assert np.abs(image[..., 0].astype(int) - image[..., 2]).mean() > 5
    assert len(np.unique(image[..., 1])) > 100


def test_bad_name_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="photo 'lena': unknown; expected one of astronaut"):
        photos.load("lena")
    monkeypatch.setattr(photos, "_package_dir", lambda package: None)
    photos._load.cache_clear()
    try:
        with pytest.raises(ImportError, match="'china' ships with scikit-learn, which is not"):
            photos.path("china")
        assert photos.available() == []
    finally:
        photos._load.cache_clear()


def test_square(all_photos):
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    np.testing.assert_array_equal(photos.square(image, 4), image[:, 1:5])
    assert photos.square(photos.load("coffee"), 224).shape == (224, 224, 3)


def _crop(obj: photos.Pasted) -> np.ndarray:
    top, left, h, w = obj.box
    return photos.load(obj.photo)[top : top + h, left : left + w]


@pytest.mark.parametrize("shape", ["box", "ellipse"])
@pytest.mark.parametrize("distractor", [False, True])
def test_pasted_pixels_masks_and_areas(all_photos, shape, distractor):
    size = 112
    for seed in SEEDS:
        pair = photos.make_pair(seed, size=size, distractor=distractor, shape=shape)
        assert pair.b.dtype == np.uint8 and pair.b.shape == (size, size, 3)
        assert len(pair.objects) == (2 if distractor else 1)
        assert len(set(pair.ids)) == len(pair.ids)
        background = photos.square(photos.load(pair.background), size)
        covered = np.zeros((size, size), bool)
        for obj in pair.objects:
            top, left, h, w = obj.place
            m = obj.mask_b
            # The mask lies inside the placed rectangle and is the whole of it for boxes.
            assert not m[:top].any() and not m[top + h :].any()
            assert not m[:, :left].any() and not m[:, left + w :].any()
            inside = m[top : top + h, left : left + w]
            assert inside.all() if shape == "box" else 0.75 < inside.mean() < 0.82
            assert 1 / 6 <= m.mean() <= 1 / 3
            # Under the mask, B holds the object's pixels: the cut resized to the placed size.
            pasted = photos._resize(_crop(obj), (h, w))
            np.testing.assert_array_equal(pair.b[top : top + h, left : left + w][inside],
                                          pasted[inside])  # fmt: skip
            # The box is the photo's object box, edges moved by at most 5% of a side.
            H, W = photos.load(obj.photo).shape[:2]
            t, l_, b, r = photos.PHOTOS[photos.names().index(obj.photo)].box
            bt, bl, bh, bw = obj.box
            assert abs(bt / H - t) <= 0.05 * (b - t) + 1 / H
            assert abs((bl + bw) / W - r) <= 0.05 * (r - l_) + 1 / W
            assert not (covered & m).any()  # objects never overlap
            covered |= m
        # Outside the masks B is the background photo's centre square, untouched.
        np.testing.assert_array_equal(pair.b[~covered], background[~covered])


def test_partner_image_is_the_object_alone(all_photos):
    pair = photos.make_pair(5, size=96, distractor=True, shape="ellipse")
    for obj in pair.objects:
        assert obj.image.shape == (96, 96, 3) and obj.mask.shape == (96, 96)
        np.testing.assert_array_equal(obj.image[~obj.mask], np.broadcast_to(photos.GREY, (
            (~obj.mask).sum(), 3)))  # fmt: skip
        rows, cols = np.nonzero(obj.mask)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert max(h, w) == 96  # scaled so its longer side fills the canvas
        crop = _crop(obj)
        assert abs(w / h - crop.shape[1] / crop.shape[0]) < 0.05  # aspect kept
        top, left = rows.min(), cols.min()
        obj_px = photos._resize(crop, (h, w))
        m = obj.mask[top : top + h, left : left + w]
        np.testing.assert_array_equal(obj.image[top : top + h, left : left + w][m], obj_px[m])


def test_pairs_are_deterministic_and_seeded(all_photos):
    one = photos.make_pair(7, size=64, distractor=True)
    two = photos.make_pair(7, size=64, distractor=True)
    np.testing.assert_array_equal(one.b, two.b)
    np.testing.assert_array_equal(one.partners, two.partners)
    np.testing.assert_array_equal(one.b_masks, two.b_masks)
    assert one.ids == two.ids and one.objects[0].box == two.objects[0].box
    others = [photos.make_pair(s, size=64, distractor=True) for s in range(8, 12)]
    assert any(not np.array_equal(one.b, o.b) for o in others)
    first = photos.make_pairs(5, seed=3, size=64)
    again = photos.make_pairs(2, seed=3, size=64)
    for p, q in zip(first[:2], again, strict=True):
        np.testing.assert_array_equal(p.b, q.b)
    assert first[0].seed == (3, 0)


@pytest.mark.parametrize("split", ["a", "b"])
def test_pairs_stay_in_their_half(all_photos, split):
    half = set(photos.names(split))
    for pair in photos.make_pairs(10, seed=1, size=64, split=split, distractor=True):
        assert set(pair.ids) <= half


def test_two_partners_for_the_same_b(all_photos):
    pair = photos.make_pair(11, size=64, distractor=True)
    assert pair.partners.shape == (2, 64, 64, 3)
    assert pair.b_masks.shape == pair.partner_masks.shape == (2, 64, 64)
    np.testing.assert_array_equal(pair.partners[0], pair.a)
    np.testing.assert_array_equal(pair.b_masks[0], pair.b_mask)
    assert pair.ids[2] == pair.objects[1].photo
    batch = photos.stack(photos.make_pairs(3, seed=0, size=64, distractor=True))
    assert batch["a"].shape == (3, 64, 64, 3) and batch["b_mask"].dtype == bool
    assert batch["partners"].shape == (3, 2, 64, 64, 3)
    assert batch["b_masks"].shape == batch["partner_masks"].shape == (3, 2, 64, 64)
    np.testing.assert_array_equal(batch["partners"][:, 0], batch["a"])


def test_bad_arguments(all_photos):
    with pytest.raises(ValueError, match="shape='star'"):
        photos.make_pair(0, shape="star")
    with pytest.raises(ValueError, match="area="):
        photos.make_pair(0, area=(0.4, 0.6))
    with pytest.raises(ValueError, match="split='x'"):
        photos.make_pair(0, split="x")
    with pytest.raises(ValueError, match="cannot be stacked"):
        photos.stack([photos.make_pair(0, size=32), photos.make_pair(0, size=32, distractor=True)])
    with pytest.raises(ValueError, match="no pairs"):
        photos.stack([])
