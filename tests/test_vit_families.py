"""ViT features of DINOv2, CLIP, SigLIP and DeiT against an independent numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax.models import Probe, ViT, decode_variant
from tests import reference_vit

# name -> (ViT keyword arguments, reference cfg)
FAMILIES = {
    "dinov2_reg": (
        dict(class_token=True, num_registers=2, layer_scale=0.1, pool_type="tok"),
        dict(class_token=True, num_registers=2, layer_scale=True, pool="tok"),
    ),
    "dinov2_probe": (
        dict(class_token=True, layer_scale=0.1, pool_type="gap_tok"),
        dict(class_token=True, layer_scale=True, pool="gap_tok"),
    ),
    "dinov2_g": (
        dict(class_token=True, layer_scale=0.1, mlp_act="swiglu", pool_type="gap"),
        dict(class_token=True, layer_scale=True, act="swiglu", pool="gap"),
    ),
    "clip": (
        dict(
            class_token=True,
            ln_pre=True,
            mlp_act="quick_gelu",
            layer_norm_eps=1e-5,
            proj_dim=6,
            proj_bias=False,
            pool_type="tok",
        ),
        dict(
            class_token=True,
            ln_pre=True,
            act="quick_gelu",
            eps=1e-5,
            proj=6,
            proj_bias=False,
            pool="tok",
        ),
    ),
    "siglip": (
        dict(mlp_act="gelu_tanh", pool_type="map"),
        dict(act="gelu_tanh", pool="map"),
    ),
    "deit_distilled": (
        dict(class_token=True, distill_token=True, pool_type="tok"),
        dict(class_token=True, distill_token=True, pool="tok"),
    ),
}


def _perturbed(model, x, seed=0):
    variables = model.init(jax.random.PRNGKey(seed), x)
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def _random_variables(model, x, seed=0):
    """Random parameters of ``model``'s shapes, drawn by numpy (no XLA compilation).

    The shapes come from ``jax.eval_shape(model.init, ...)`` (traced, not computed): an
    eager ``init`` compiles every operation of the forward and every random draw's shape
    (seconds per family). The values are ``_perturbed``'s in distribution: LayerNorm scales
    1 + N(0, 0.1^2), kernels N(0, 1 / fan_in + 0.1^2), everything else N(0, 0.1^2).
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    flat = traverse_util.flatten_dict(shapes)
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in sorted(flat.items()):
        noise = rng.standard_normal(leaf.shape)
        if path[-1] == "scale":
            value = 1.0 + 0.1 * noise
        elif path[-1] == "kernel":
            shape = leaf.shape
            fan_in = shape[0] if len(shape) == 3 and path[-2] != "out" else np.prod(shape[:-1])
            value = noise * np.sqrt(1.0 / fan_in + 0.01)
        else:
            value = 0.1 * noise
        out[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(out)


# Compiled once per model and shape (op by op, a forward compiles its operations one by one).
_apply = jax.jit(lambda model, variables, x: model.apply(variables, x), static_argnums=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forward_matches_numpy_reference(family):
    kw, cfg = FAMILIES[family]
    model = ViT(**decode_variant("Tiny/4"), **kw)
    images = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 12, 3))
    variables = _random_variables(model, images)
    emb, out = _apply(model, variables, images)
    attn = out["attention"]
    n_all = 6 + model.num_prefix_tokens
    assert attn.shape == (2, 2, 2, n_all, n_all)
    assert emb.shape == (2, model.embedding_dim) and emb.dtype == jnp.float32
    for i in range(2):
        ref_emb, ref_tokens, ref_attn = reference_vit.vit_forward(
            variables["params"], np.asarray(images[i], np.float64), patch=4, cfg=cfg
        )
        np.testing.assert_allclose(emb[i], ref_emb, atol=3e-5, rtol=1e-4)
        np.testing.assert_allclose(out["tokens"][i], ref_tokens, atol=3e-5, rtol=1e-4)
        np.testing.assert_allclose(attn[i], ref_attn, atol=1e-5)


def _shapes(model, x):
    """The variables' names and shapes, traced, not computed."""
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)


def test_new_parameter_names_and_defaults_unchanged():
    x = jnp.zeros((1, 8, 8, 3))
    plain = ViT(**decode_variant("mu/4"), class_token=True)
    names = set("/".join(k) for k in traverse_util.flatten_dict(_shapes(plain, x)))
    assert not any(("ls1" in n) or ("reg" in n) or ("ln_pre" in n) for n in names)
    full = ViT(
        **decode_variant("mu/4"),
        class_token=True,
        distill_token=True,
        num_registers=3,
        layer_scale=1e-5,
        ln_pre=True,
    )
    variables = jax.jit(full.init)(jax.random.PRNGKey(0), x)
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    assert params["Transformer/reg"].shape == (1, 3, 16)
    assert params["dist"].shape == (1, 1, 16)
    # Class + distillation + 4 patches have positions; registers do not.
    assert params["Transformer/posembed_input/pos_embedding"].shape == (1, 6, 16)
    np.testing.assert_allclose(params["Transformer/encoderblock_0/ls1"], 1e-5)
    assert "Transformer/ln_pre/scale" in params
    siglip = ViT(**decode_variant("mu/4"), pool_type="map")
    params = traverse_util.flatten_dict(_shapes(siglip, x)["params"], sep="/")
    assert params["MAPHead_0/probe"].shape == (1, 1, 16)
    assert params["MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"].shape == (16, 2, 8)
    assert params["MAPHead_0/MlpBlock_0/Dense_0/kernel"].shape == (16, 32)
    swiglu = ViT(**decode_variant("mu/4"), mlp_act="swiglu")
    params = traverse_util.flatten_dict(_shapes(swiglu, x)["params"], sep="/")
    assert params["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape == (16, 64)
    assert params["Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel"].shape == (32, 16)


def test_init_creates_only_params():
    model = ViT(**decode_variant("mu/4"), class_token=True, pool_type="tok")
    assert set(_shapes(model, jnp.zeros((1, 8, 8, 3)))) == {"params"}


def test_bad_family_configs_raise_clearly():
    x = jnp.zeros((1, 8, 8, 3))
    for kw, match in [
        (dict(pool_type="gap_tok"), "class_token"),
        (dict(pool_type="gap_tok", class_token=True, proj_dim=4), "gap_tok"),
        (dict(class_token=True, keep_class_token=False, num_registers=2), "keep_class_token"),
        (dict(mlp_act="relu6"), "mlp_act"),
        (dict(pool_type="cls"), "pool_type"),
    ]:
        with pytest.raises(ValueError, match=match):
            ViT(**decode_variant("mu/4"), **kw).init(jax.random.PRNGKey(0), x)


def test_detached_forward_has_the_same_values():
    kw, _ = FAMILIES["dinov2_reg"]
    model = ViT(**decode_variant("Tiny/4"), **kw)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
    variables = _random_variables(model, x)
    e1, _ = _apply(model, variables, x)
    e2, _ = jax.jit(lambda v, x: model.apply(v, x, probe=Probe(detach=True)))(variables, x)
    np.testing.assert_allclose(e1, e2, atol=2e-6)


def test_block_and_attention_deltas_give_intermediate_gradients():
    model = ViT(**decode_variant("Tiny/4"), class_token=True, pool_type="tok")
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 8, 8, 3))
    variables = _random_variables(model, x)
    _, out = jax.jit(model.apply)(variables, x)
    assert len(out["block_inputs"]) == model.depth + 1
    x1 = out["block_inputs"][1]

    # Compiled (each a few hundred operations op by op, the gradients twice that).
    @jax.jit
    def emb_from_block1(tokens, x1):
        # The same function, by perturbing block 1's input by (tokens - x1).
        e, _ = model.apply(variables, x, probe=Probe(block_deltas={1: tokens - x1}))
        return e.sum()

    g_delta = jax.jit(
        jax.grad(lambda d: model.apply(variables, x, probe=Probe(block_deltas={1: d}))[0].sum())
    )(jnp.zeros_like(x1))
    np.testing.assert_allclose(g_delta, jax.jit(jax.grad(emb_from_block1))(x1, x1), atol=1e-6)
    # Finite differences along a random direction.
    direction = jax.random.normal(jax.random.PRNGKey(5), x1.shape)
    h = 1e-2
    fd = (emb_from_block1(x1 + h * direction, x1) - emb_from_block1(x1 - h * direction, x1)) / (
        2 * h
    )
    np.testing.assert_allclose((g_delta * direction).sum(), fd, rtol=2e-2, atol=1e-3)
    shape = (1, 2, 5, 5)
    ga = jax.jit(
        jax.grad(lambda d: model.apply(variables, x, probe=Probe(attention_deltas={0: d}))[0].sum())
    )(jnp.zeros(shape))
    assert ga.shape == shape and float(jnp.abs(ga).max()) > 0
    bad = Probe(block_deltas={1: jnp.zeros((1, 3, 32))})
    with pytest.raises(ValueError, match=r"block_deltas\[1\]"):
        jax.eval_shape(lambda: model.apply(variables, x, probe=bad))
