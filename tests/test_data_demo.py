"""The generated demo dataset (pairviz_jax.data.demo)."""

import numpy as np
import pytest

from pairviz_jax.data import demo


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = demo.render_example("train", 5, image_size=32, seed=1)
    b = demo.render_example("train", 5, image_size=32, seed=1)
    c = demo.render_example("train", 5, image_size=32, seed=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    assert a["label"] == c["label"]  # the class depends on the index only


def test_schema_and_class_layout():
    source = demo.DemoSource("train", image_size=40, examples_per_class=2)
    assert len(source) == 2 * len(demo.TRAIN_GLYPHS) == 48
    ex = source[25]
    assert ex["image"].shape == (40, 40, 3) and ex["image"].dtype == np.uint8
    assert ex["mask"].shape == (40, 40) and ex["mask"].dtype == bool
    assert ex["label"].dtype == np.int32 and ex["id"].dtype == np.int64
    assert int(ex["label"]) == 25 % 24 and int(ex["id"]) == 25
    with pytest.raises(IndexError):
        source[48]


def test_test_classes_are_unseen_in_training():
    assert not set(demo.TRAIN_GLYPHS) & set(demo.TEST_GLYPHS)
    train = demo.materialize(demo.DemoSource("train", image_size=16, examples_per_class=1))
    test = demo.materialize(demo.DemoSource("test", image_size=16, examples_per_class=1))
    assert set(train["label"].tolist()) == set(range(24))
    assert set(test["label"].tolist()) == set(range(24, 48))


@pytest.mark.parametrize("split", ["train", "test"])
def test_mask_covers_the_drawn_glyph(split):
    for index in range(0, 48, 5):
        ex = demo.render_example(split, index, image_size=48, seed=3)
        bg = demo.render_example(split, index, image_size=48, seed=3, draw_glyph=False)
        changed = np.abs(ex["image"].astype(int) - bg["image"].astype(int)).max(-1) > 0
        np.testing.assert_array_equal(ex["mask"], bg["mask"])
        assert changed.any()
        # Every pixel the glyph touched is in the mask ...
        assert not (changed & ~ex["mask"]).any()
        # ... and the mask is the glyph, not a box: most of it visibly changed.
        assert changed[ex["mask"]].mean() > 0.7
        assert 0.01 < ex["mask"].mean() < 0.6


def test_glyphs_contrast_with_the_background():
    for index in range(24):
        ex = demo.render_example("train", index, image_size=48, seed=0)
        bg = demo.render_example("train", index, image_size=48, seed=0, draw_glyph=False)
        lum = np.asarray([0.299, 0.587, 0.114])
        core = ex["mask"]
        diff = np.abs((ex["image"][core] - bg["image"][core].astype(float)) @ lum) / 255
        assert np.median(diff) > 0.15


def test_materialize_equals_the_examples_drawn_one_by_one():
    """``materialize`` (what the pipeline and the tests draw from) is ``render_example`` per
    index, stacked; the default 64-px config included. (Its speed is a benchmark's
    business: the whole default dataset draws in about 3 s on 2 cores.)"""
    for split in ("train", "test"):
        source = demo.DemoSource(split)  # the default 64-px config
        indices = range(3, len(source), len(source) // 5)
        got = demo.materialize(source, indices)
        for row, index in enumerate(indices):
            want = demo.render_example(split, index)
            np.testing.assert_array_equal(got["image"][row], want["image"])
            np.testing.assert_array_equal(got["mask"][row], want["mask"])
            assert got["label"][row] == want["label"] and got["id"][row] == index
        assert got["image"].shape == (len(indices), 64, 64, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="demo split"):
        demo.DemoSource("validation")
    with pytest.raises(ValueError, match="image_size"):
        demo.render_example("train", 0, image_size=8)
    with pytest.raises(ValueError, match="examples_per_class"):
        demo.DemoSource("train", examples_per_class=0)


def test_distractor_images_hold_two_glyphs_in_opposite_halves():
    for index in range(24):
        ex = demo.render_with_distractor("test", index, image_size=48, seed=3)
        again = demo.render_with_distractor("test", index, image_size=48, seed=3)
        np.testing.assert_array_equal(ex["image"], again["image"])
        assert ex["label"] == 24 + index % 24 and ex["distractor_label"] != ex["label"]
        assert 24 <= ex["distractor_label"] < 48
        shared, other = ex["mask"], ex["distractor_mask"]
        assert shared.any() and other.any() and not (shared & other).any()
        # One glyph per half, left/right or top/bottom.
        ys, xs = np.nonzero(shared)
        yd, xd = np.nonzero(other)
        split_x = xs.max() < 24 <= xd.min() or xd.max() < 24 <= xs.min()
        split_y = ys.max() < 24 <= yd.min() or yd.max() < 24 <= ys.min()
        assert split_x or split_y
    with pytest.raises(ValueError, match="split"):
        demo.render_with_distractor("val", 0)
    with pytest.raises(ValueError, match="at least|>= 32"):
        demo.render_with_distractor("test", 0, image_size=24)


def test_tiny_images_whose_glyph_covers_no_pixel_still_render():
    # Test image 137 at 16 px: the glyph covers no pixel by half (its colour once came out NaN).
    ex = demo.render_example("test", 137, image_size=16)
    assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.uint8
    big = demo.render_example("test", 137, image_size=64)
    assert big["mask"].any()
