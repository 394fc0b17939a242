"""Training augmentation, evaluation resize and normalisation (pairviz_jax.data.preprocess)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax.data import preprocess
from pairviz_jax.data.preprocess import (
    NORMALIZATION,
    eval_resize,
    normalize,
    random_resized_crop_box,
    train_augment,
)


def _halves(h=30, w=50):
    """Left half black, right half white, uint8 [h, w, 3]."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2 :] = 255
    return image


def test_crop_box_in_bounds_with_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(rng, 60, 90, scale=(0.2, 0.6), ratio=(0.5, 2.0))
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
        assert 0.18 <= h * w / (60 * 90) <= 0.62
        assert 0.45 <= w / h <= 2.2


def test_crop_box_falls_back_to_the_central_crop():
    # A full-area square crop never fits a 40 x 100 image: centre crop with ratio clamped.
    box = random_resized_crop_box(
        np.random.default_rng(0), 40, 100, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    assert box == (0, 30, 40, 40)


def test_crop_box_rejects_bad_ranges():
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop_box(np.random.default_rng(0), 10, 10, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        random_resized_crop_box(np.random.default_rng(0), 10, 10, ratio=(0.0, 1.0))


def test_train_augment_shape_determinism_and_flips():
    image = _halves()
    outs = [train_augment(image, np.random.default_rng(s), image_size=16)[0] for s in range(40)]
    assert all(o.shape == (16, 16, 3) and o.dtype == np.uint8 for o in outs)
    np.testing.assert_array_equal(
        train_augment(image, np.random.default_rng(3), image_size=(12, 20))[0],
        train_augment(image, np.random.default_rng(3), image_size=(12, 20))[0],
    )
    assert train_augment(image, np.random.default_rng(3), image_size=(12, 20))[0].shape == (
        12,
        20,
        3,
    )
    # Crops that straddle the edge show it; flipped ones have white on the left.
    straddling = [o for o in outs if o[:, 0].mean() != o[:, -1].mean()]
    flipped = sum(o[:, 0].mean() > o[:, -1].mean() for o in straddling)
    assert len(straddling) >= 10 and 0.2 < flipped / len(straddling) < 0.8
    no_flip = [
        train_augment(image, np.random.default_rng(s), image_size=16, flip=False)[0]
        for s in range(40)
    ]
    assert all(o[:, 0].mean() <= o[:, -1].mean() for o in no_flip)


def test_train_augment_moves_the_mask_with_the_image():
    image = np.zeros((48, 64, 3), np.uint8)
    mask = np.zeros((48, 64), bool)
    mask[10:30, 5:25] = True
    image[mask] = (255, 0, 0)
    for seed in range(20):
        out, out_mask = train_augment(
            image, np.random.default_rng(seed), image_size=24, scale=(0.3, 1.0), mask=mask
        )
        assert out_mask.shape == (24, 24) and out_mask.dtype == bool
        red = (out[..., 0] > 128) & (out[..., 1] < 128)
        if out_mask.sum() > 4:
            assert red[out_mask].mean() > 0.85
        assert red[~out_mask].mean() < 0.1


def test_eval_resize_keeps_the_whole_image():
    out, mask = eval_resize(_halves(30, 50), image_size=16)
    assert out.shape == (16, 16, 3) and mask is None
    assert (out[:, :7] < 10).all() and (out[:, 9:] > 245).all()
    # Borders survive (a crop would cut them): red left columns, blue top rows.
    framed = np.full((30, 50, 3), 128, np.uint8)
    framed[:, :5] = (255, 0, 0)
    framed[:3, 5:] = (0, 0, 255)
    out, _ = eval_resize(framed, image_size=16)
    assert (out[2:, 0, 0] > 200).all() and (out[2:, 0, 2] < 60).all()
    assert (out[0, 3:, 2] > 200).all() and (out[0, 3:, 0] < 60).all()
    same, _ = eval_resize(_halves(16, 16), image_size=16)
    np.testing.assert_array_equal(same, _halves(16, 16))
    m = np.zeros((30, 50), bool)
    m[:, 25:] = True
    _, m_out = eval_resize(_halves(30, 50), image_size=(10, 20), mask=m)
    assert m_out.shape == (10, 20) and m_out[:, 10:].all() and not m_out[:, :10].any()


def test_resize_rejects_wrong_inputs():
    with pytest.raises(ValueError, match="image_size"):
        eval_resize(_halves(), image_size=0)
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        eval_resize(np.zeros((4, 4), np.uint8), image_size=2)
    with pytest.raises(ValueError, match="mask"):
        eval_resize(_halves(), image_size=8, mask=np.zeros((3, 3), bool))


def test_normalize_hand_checked_values():
    mean, std = NORMALIZATION["sop"]
    assert mean == (0.5807, 0.5396, 0.5044) and std == (0.2901, 0.2974, 0.3095)
    assert NORMALIZATION["hotels50k"] == (preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)
    image = np.array([[[0, 255, 51]]], np.uint8)
    out = normalize(image, "sop")
    expected = [(0 - 0.5807) / 0.2901, (1 - 0.5396) / 0.2974, (0.2 - 0.5044) / 0.3095]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_normalize_jits_on_jax_arrays():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)), jnp.uint8)
    out = jax.jit(lambda x: normalize(x, "gldv2_clean"))(images)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    np.testing.assert_allclose(
        out,
        normalize(np.asarray(images), preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD),
        atol=1e-6,
    )


def test_normalize_errors():
    with pytest.raises(ValueError, match="no normalisation for dataset 'nope'"):
        normalize(np.zeros((1, 1, 3), np.uint8), "nope")
    with pytest.raises(ValueError, match="std is required"):
        normalize(np.zeros((1, 1, 3), np.uint8), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
        normalize(np.zeros((1, 1, 4), np.uint8), "sop")
