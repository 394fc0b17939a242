"""ViT: variants, parameter names and counts, forward pass against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax.models import Probe, ViT, decode_variant
from tests import reference


def _count(model, size):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


def test_decode_variant_table():
    assert decode_variant("B/16") == dict(
        width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16)
    )
    assert decode_variant("Ti/8")["patch_size"] == (8, 8)
    assert decode_variant("L/14")["width"] == 1024
    assert "patch_size" not in decode_variant("S")
    for bad in ["X/16", "B/", "B/sixteen", "B16", ""]:
        with pytest.raises(ValueError, match="variant"):
            decode_variant(bad)


@pytest.mark.parametrize(
    "variant,kw,size,expected",
    [
        # timm vit_base_patch16_224 is 86,567,656 with its 1000-class head (769,000).
        ("B/16", dict(class_token=True), 224, 85_798_656),
        # The paper's model at 256 px: 257 position slots and a 768 -> 512 projection.
        ("B/16", dict(class_token=True, keep_class_token=False, proj_dim=512), 256, 86_238_464),
        # timm vit_small_patch16_224 without head: 22,050,664 - 384,000 - 1000.
        ("S/16", dict(class_token=True), 224, 21_665_664),
    ],
)
def test_pinned_parameter_counts(variant, kw, size, expected):
    assert _count(ViT(**decode_variant(variant), **kw), size) == expected


def test_checkpoint_compatible_names():
    model = ViT(**decode_variant("mu/4"), class_token=True, proj_dim=8)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    names = set("/".join(k) for k in traverse_util.flatten_dict(params))
    for name in [
        "embedding/kernel",
        "cls",
        "Transformer/posembed_input/pos_embedding",
        "Transformer/encoderblock_0/LayerNorm_0/scale",
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel",
        "Transformer/encoderblock_0/LayerNorm_2/bias",
        "Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel",
        "Transformer/encoder_norm/scale",
        "head/kernel",
    ]:
        assert name in names, name
    assert params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_1"]["query"][
        "kernel"
    ].shape == (16, 2, 8)


@pytest.mark.parametrize(
    "kw",
    [
        dict(class_token=True, keep_class_token=False, proj_dim=6),  # the authors' model
        dict(class_token=True, keep_class_token=True),  # a standard ViT, class token kept
        dict(),  # no class token at all
    ],
)
def test_forward_matches_numpy_reference(kw):
    model = ViT(**decode_variant("Tiny/4"), **kw)
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 12, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), images)
    # Non-trivial LayerNorm/bias values so that every parameter matters.
    variables = jax.tree_util.tree_map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape), variables
    )
    emb, out = model.apply(variables, images)
    attn = out["attention"]  # every head: the default probe
    for i in range(2):
        tokens, att = reference.vit_forward(
            variables["params"],
            np.asarray(images[i], np.float64),
            patch=4,
            num_heads=2,
            class_token=kw.get("class_token", False),
            keep_class_token=kw.get("keep_class_token", True),
            proj=kw.get("proj_dim"),
        )
        np.testing.assert_allclose(out["tokens"][i], tokens, atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(emb[i], tokens.mean(0), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(attn[i], att, atol=1e-5)
    n = 6 + int(kw.get("class_token", False) and kw.get("keep_class_token", True))
    assert attn.shape == (2, 2, 2, n, n)
    assert out["tokens"].shape == (2, 6, kw.get("proj_dim") or 32)


def test_attention_collected_only_when_asked():
    model = ViT(**decode_variant("mu/4"))
    x = jnp.ones((1, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert set(variables) == {"params"}
    emb, out = model.apply(variables, x)
    assert emb.shape == (1, 16)
    fused = model.apply(variables, x, probe=Probe(attention_fusion="mean"))[1]["attention"]
    heads = out["attention"]
    assert fused.shape == (1, 1, 4, 4) and heads.shape == (1, 1, 2, 4, 4)
    np.testing.assert_allclose(fused, heads.mean(2), atol=1e-7)
    np.testing.assert_allclose(heads.sum(-1), 1.0, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    kw = dict(decode_variant("Tiny/4"), proj_dim=8)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = ViT(**kw).init(jax.random.PRNGKey(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    (e32, _), (e16, out16) = (
        ViT(**kw).apply(variables, x),
        ViT(**kw, dtype=jnp.bfloat16).apply(variables, x),
    )
    assert e16.dtype == jnp.float32 and out16["tokens"].dtype == jnp.float32
    cos = (e16 * e32).sum(-1) / (jnp.linalg.norm(e16, axis=-1) * jnp.linalg.norm(e32, axis=-1))
    assert float(cos.min()) > 0.99


def test_bad_configs_and_images_raise_clearly():
    model = ViT(**decode_variant("mu/4"))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.apply(variables, jnp.zeros((1, 10, 8, 3)))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.apply(variables, jnp.zeros((1, 2, 2, 3)))  # smaller than one patch
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        model.apply(variables, jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="class_token"):
        ViT(**decode_variant("mu/4"), pool_type="tok").init(
            jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))
        )
    with pytest.raises(ValueError, match="pool_type"):
        ViT(**decode_variant("mu/4"), pool_type="mean").init(
            jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))
        )


def test_any_image_size_divisible_by_patch():
    model = ViT(**decode_variant("mu/4"), class_token=True, keep_class_token=False)
    for h, w in [(8, 8), (12, 20)]:
        x = jnp.zeros((1, h, w, 3))
        variables = model.init(jax.random.PRNGKey(0), x)
        _, out = model.apply(variables, x)
        assert out["tokens"].shape == (1, (h // 4) * (w // 4), 16)
        assert model.grid(x.shape) == (h // 4, w // 4)


def test_models_take_images_train_and_one_probe():
    """One interface: ``__call__(images, *, train=False, probe=None) -> (embedding, out)``;
    what a method injects is one frozen ``Probe``; a CNN refuses what it cannot honour."""
    import dataclasses
    import inspect

    from pairviz_jax.models import ResNet

    for cls in (ViT, ResNet):
        params = list(inspect.signature(cls.__call__).parameters.values())
        keywords = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        assert keywords == ["train", "probe"], (cls.__name__, keywords)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Probe().detach = True  # type: ignore[misc]
    cnn = ResNet(block_sizes=(1,), width=8, num_groups=2, proj_dim=4)
    with pytest.raises(ValueError, match="ResNet takes no probe with detach or deltas"):
        cnn.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), probe=Probe(detach=True))
