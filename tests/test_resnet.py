"""BiT ResNet-v2 with the authors' head: names, counts, grid, and numerical properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax.models import ResNet, decode_resnet
from pairviz_jax.models.resnet import StdConv

TINY = dict(block_sizes=(2, 1), width=8, num_groups=2, proj_dim=6)
SMALL = dict(block_sizes=(1, 1), width=8, num_groups=2, proj_dim=6)  # fewer ops to compile


def _count(model):
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))


def _random_variables(model, size=32, seed=0, scale=0.3):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32) * scale), shapes
    )


_apply = jax.jit(lambda model, variables, x: model.apply(variables, x), static_argnums=0)


def test_decode_resnet():
    assert decode_resnet("R101x1") == dict(block_sizes=(3, 4, 23, 3), width=64)
    assert decode_resnet("r50x3") == dict(block_sizes=(3, 4, 6, 3), width=192)
    for bad in ["R34x1", "R101", "101x1", "R101x0", ""]:
        with pytest.raises(ValueError, match="variant"):
            decode_resnet(bad)


@pytest.mark.parametrize(
    "variant,proj_dim,expected",
    [
        # timm resnetv2_50x1_bit / resnetv2_101x1_bit with num_classes=0.
        ("R50x1", None, 23_500_352),
        ("R101x1", None, 42_492_480),
        # The paper's baseline: + the 2048 -> 512 1x1 head with bias.
        ("R101x1", 512, 42_492_480 + 2048 * 512 + 512),
    ],
)
def test_parameter_counts(variant, proj_dim, expected):
    assert _count(ResNet(**decode_resnet(variant), proj_dim=proj_dim)) == expected


def test_bit_parameter_names():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(ResNet(**TINY).init, jax.random.PRNGKey(0), x)
    flat = {k: v.shape for k, v in traverse_util.flatten_dict(shapes["params"], sep="/").items()}
    assert flat["root_block/standardized_conv2d/kernel"] == (7, 7, 3, 8)
    assert flat["block1/unit01/a/proj/standardized_conv2d/kernel"] == (1, 1, 8, 32)
    assert flat["block1/unit02/b/standardized_conv2d/kernel"] == (3, 3, 8, 8)
    assert flat["block2/unit01/a/proj/standardized_conv2d/kernel"] == (1, 1, 32, 64)
    assert flat["block2/unit01/c/group_norm/scale"] == (16,)
    assert flat["group_norm/bias"] == (64,)
    assert flat["head/conv2d/kernel"] == (1, 1, 64, 6) and flat["head/conv2d/bias"] == (6,)
    # Only units whose shape or stride changes have a projection.
    assert "block1/unit02/a/proj/standardized_conv2d/kernel" not in flat


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (64, 48), (1, 1)])
def test_grid_matches_tokens(size):
    model = ResNet(**TINY)
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    variables = _random_variables(model)
    emb, out = jax.eval_shape(model.apply, variables, x)
    gh, gw = model.grid(x.shape)
    assert out["tokens"].shape == (2, gh * gw, 6) and emb.shape == (2, 6)
    assert out["features"].shape == (2, gh, gw, 64)


def test_grid_of_the_paper_input():
    model = ResNet(**decode_resnet("R101x1"))
    assert model.grid((1, 256, 256, 3)) == (8, 8)
    assert model.grid((224, 224, 3)) == (7, 7)
    assert ResNet.has_attention is False


def test_embedding_is_mean_of_tokens_and_head_is_per_location():
    model = ResNet(**SMALL)
    variables = _random_variables(model)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    emb, out = _apply(model, variables, x)
    np.testing.assert_allclose(emb, out["tokens"].mean(axis=1), atol=1e-6)
    head = variables["params"]["head"]["conv2d"]
    b, h, w, c = out["features"].shape
    want = out["features"].reshape(b, h * w, c) @ head["kernel"][0, 0] + head["bias"]
    np.testing.assert_allclose(out["tokens"], want, rtol=1e-5, atol=1e-5)


def test_weight_standardisation_ignores_kernel_scale_and_shift():
    """BiT standardises each output filter: w and a * w + b(out) give the same output."""
    conv = StdConv(features=5, kernel_size=3, strides=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 9, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
    y = conv.apply({"params": {"kernel": w}}, x)
    shifted = 3.0 * w + jnp.arange(5.0)
    np.testing.assert_allclose(conv.apply({"params": {"kernel": shifted}}, x), y, atol=1e-4)
    assert y.shape == (1, 5, 5, 5)
    # And it is not a plain convolution.
    plain = jax.lax.conv_general_dilated(
        x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert np.abs(np.asarray(plain - y)).max() > 1e-2


def test_batch_equals_per_item_loop():
    model = ResNet(**SMALL)
    variables = _random_variables(model)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
    emb, _ = _apply(model, variables, x)
    single = jnp.concatenate([_apply(model, variables, x[i : i + 1])[0] for i in range(2)])
    np.testing.assert_allclose(emb, single, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = ResNet(**SMALL, dtype=jnp.bfloat16)
    variables = _random_variables(model)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 3))
    emb, out = _apply(model, variables, x)
    assert emb.dtype == jnp.float32 and out["tokens"].dtype == jnp.float32
    ref, _ = _apply(ResNet(**SMALL), variables, x)
    assert np.abs(np.asarray(emb - ref)).max() < 0.1 * np.abs(np.asarray(ref)).max()


def test_rejects_non_image_input():
    model = ResNet(**TINY)
    variables = _random_variables(model)
    with pytest.raises(ValueError, match=r"images must be \[B, H, W, C\]"):
        model.apply(variables, jnp.zeros((32, 32, 3)))
