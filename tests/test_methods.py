"""Explanation methods: each one's defining property against an independent reference.

Models, their parameters and their compiled forward passes are built once per module
(``_setup`` and ``_apply`` are cached); the door's compiled functions are cached per
(method, options, model) by ``explain`` itself, so tests on one family share them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax import explain
from pairviz_jax.explain import methods
from pairviz_jax.explain.decompose import decompose_embedding
from pairviz_jax.models import Probe, ViT, decode_variant
from tests.test_vit_families import FAMILIES, _perturbed

GRID_IMAGE = (16, 16)  # 4 x 4 patches of 4 px for the Tiny/4 models
# Every test explains N images: one batch size, so each (method, options, model) compiles once
# for the module (a batch of 1 or 3 beside it would compile every program again).
N = 2


@functools.cache
def _setup(family=None, seed=0):
    extra = dict(FAMILIES[family][0]) if family else dict(proj_dim=6)
    model = ViT(**decode_variant("Tiny/4"), **extra)
    x = jax.random.normal(jax.random.PRNGKey(seed + 3), (N, *GRID_IMAGE, 3))
    return model, _perturbed(model, x, seed), x


@functools.cache
def _apply(model):
    """``model.apply`` compiled once per model (kwargs such as ``probe`` are traced)."""
    return jax.jit(model.apply)


def _partners(model, variables, x, seed=7, k=2):
    """K partner embeddings per image: other random images' embeddings."""
    y = jax.random.normal(jax.random.PRNGKey(seed), (x.shape[0] * k, *x.shape[1:]))
    emb = _apply(model)(variables, y)[0]
    return emb.reshape(x.shape[0], k, -1)


def _cotangent(model, variables, x, partners, target="score"):
    """c = u_partner / |beta(x)| [B, K, E] (the explained quantity, methods.base); for
    target="cosine" the cosine's own gradient, (u_partner - s u_x) / |beta(x)|."""
    emb = np.asarray(_apply(model)(variables, x)[0], np.float64)
    u = np.asarray(partners, np.float64)
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    norm = np.linalg.norm(emb, axis=-1)
    if target == "cosine":
        ux = emb / norm[:, None]
        u = u - np.einsum("be,bke->bk", ux, u)[..., None] * ux[:, None]
    return u / norm[:, None, None]


# --------------------------------------------------------------------------- registry


def test_registry_names_options_and_errors():
    assert {"paper", "gradxinput", "chefer", "conservative", "ig"} <= set(methods.METHODS)
    for m in methods.METHODS.values():
        assert m.conserves and m.prepare.__doc__ and "Conserves" in m.prepare.__doc__
    model, variables, x = _setup()
    with pytest.raises(ValueError, match="unknown method 'lrp'"):
        explain.paired_maps(model, variables, x, x, method="lrp")
    with pytest.raises(ValueError, match="takes no option steps"):
        explain.paired_maps(model, variables, x, x, method="chefer", steps=3)
    with pytest.raises(ValueError, match="layer=9"):
        explain.paired_maps(model, variables, x, x, method="gradxinput", layer=9)
    with pytest.raises(ValueError, match="takes no option layer"):
        explain.paired_maps(model, variables, x, x, layer=1)
    with pytest.raises(ValueError, match=r"partners must be \[B, K, E\]"):
        explain.against(model, variables, x, jnp.zeros((5, 6)), method="chefer")


def test_methods_that_need_a_vit_say_so_for_a_cnn():
    from pairviz_jax.models import ResNet

    model = ResNet(width=8, block_sizes=(1, 1), num_groups=2, proj_dim=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    # Only shapes are checked: the parameters' shapes and the door traced (jax.eval_shape:
    # every check and the whole method's trace, no compilation).
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(1), x)
    with pytest.raises(ValueError, match="'chefer' needs a ViT"):
        explain.paired_maps(model, variables, x, x[::-1], method="chefer")
    xa, xb = np.asarray(x), np.asarray(x[::-1])  # concrete under the trace: checked as given
    out = jax.eval_shape(
        lambda v: explain.paired_maps(model, v, xa, xb, method="ig", steps=4, upsampled=False),
        variables,
    )
    assert out["map_a"].shape == (2, *model.grid(x.shape))


# --------------------------------------------------------------------------- paper


@pytest.mark.parametrize(
    "family,convention,start",
    [(None, "authors", 0), ("dinov2_reg", "transpose", 1), ("siglip", "authors", 1)],
)
def test_paper_in_the_registry_equals_paired_and_cross_maps(family, convention, start):
    model, variables, x = _setup(family)
    xb = x[::-1] * 0.7 + 0.2
    ref = explain.paired_maps(
        model, variables, x, xb, convention=convention, start_layer=start, upsampled=False
    )
    emb_b = _apply(model)(variables, xb)[0]
    out = explain.against(
        model, variables, x, emb_b, method="paper", convention=convention, start_layer=start
    )
    np.testing.assert_allclose(out["maps"], ref["map_a"], atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(out["score"], ref["score"], atol=1e-6)
    cross = explain.cross_maps(
        explain.features(model, variables, x),
        explain.features(model, variables, xb),
        convention=convention,
        start_layer=start,
    )
    k = jnp.arange(N)
    np.testing.assert_allclose(cross["maps_q"][k, k], out["maps"], atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- gradient x input


def _finite_difference_gxi(model, variables, x, cot, layer, detach=False, h=2e-2):
    """d/dt f(x_k + t e_j x_kj) at t = 0 per token j, by Richardson-extrapolated central
    differences of the forward pass alone (no autodiff)."""
    _, out = _apply(model)(variables, x)
    tokens = out["block_inputs"][layer]  # [B, N', D]
    n_all = tokens.shape[1]

    @jax.jit
    def f(t):  # t [B, N'] -> f for every (token, partner): [N', B, K]
        def one(j):
            delta = jnp.zeros_like(tokens).at[:, j].set(t[:, j, None] * tokens[:, j])
            probe = Probe(detach=detach, block_deltas={layer: delta})
            emb = model.apply(variables, x, probe=probe)[0]
            return jnp.einsum("be,bke->bk", emb, cot)

        return jax.lax.map(one, jnp.arange(n_all))

    ones = jnp.ones(tokens.shape[:2])

    def central(s):
        return (np.asarray(f(s * ones), np.float64) - np.asarray(f(-s * ones), np.float64)) / (
            2 * s
        )

    d = (4 * central(h / 2) - central(h)) / 3  # O(h^4)
    return np.moveaxis(d, 0, -1)  # [B, K, N']


@pytest.mark.parametrize("family,layer", [(None, 0), ("dinov2_reg", 1), ("clip", 0)])
def test_gradxinput_equals_finite_differences_per_token(family, layer):
    model, variables, x = _setup(family)
    partners = _partners(model, variables, x)
    cot = jnp.asarray(_cotangent(model, variables, x, partners), jnp.float32)
    fd = _finite_difference_gxi(model, variables, x, cot, layer)  # [B, K, N']
    out = explain.against(model, variables, x, partners, method="gradxinput", layer=layer)
    n = 16
    np.testing.assert_allclose(out["maps"].reshape(2, 2, n), fd[..., -n:], atol=2e-4, rtol=2e-3)
    np.testing.assert_allclose(out["total"], fd.sum(-1), atol=1e-3, rtol=2e-3)
    # f_p's value is the cosine.
    emb = _apply(model)(variables, x)[0]
    want = np.einsum("be,bke->bk", emb / np.linalg.norm(emb, axis=-1, keepdims=True), partners)
    want = want / np.linalg.norm(partners, axis=-1)
    np.testing.assert_allclose(out["score"], want, atol=1e-5)


def test_gradxinput_at_the_last_block_through_the_final_norm_is_zero():
    """x . grad of a per-token LayerNorm is 0 (scale invariance): documented degenerate case."""
    model, variables, x = _setup()
    out = explain.against(
        model, variables, x, _partners(model, variables, x), method="gradxinput", layer=2
    )
    np.testing.assert_allclose(out["maps"], 0.0, atol=1e-4)


# --------------------------------------------------------------------------- conservative


def _bias_terms(model, variables, x, cot, layer):
    """sum over biases b above block ``layer`` of b . df/db (detached), per (image, partner),
    from jax.grad over the parameters with the layer's tokens held (an independent path)."""

    @jax.jit
    @jax.grad
    def grad_f(params, c):
        emb = model.apply({"params": params}, x, probe=Probe(detach=True))[0]
        return jnp.einsum("be,be->", emb, c)

    # Everything above block k depends on the parameters below it only through x_k, so the
    # partial derivatives of the biases above hold x_k fixed.
    def above(path):
        name = "/".join(path)
        if name.startswith("Transformer/encoderblock_"):
            return int(path[1].split("_")[1]) >= layer
        return name.startswith(("Transformer/encoder_norm", "head", "MAPHead_0"))

    # Images do not interact, so the cotangent of image i alone (zero for the others) gives
    # image i's terms from the one compiled gradient.
    flat_p = traverse_util.flatten_dict(variables["params"])
    totals = np.zeros(cot.shape[:2])
    for i in range(cot.shape[0]):
        alone = (jnp.arange(cot.shape[0]) == i)[:, None]
        for k in range(cot.shape[1]):
            flat_g = traverse_util.flatten_dict(grad_f(variables["params"], cot[:, k] * alone))
            for path, b in flat_p.items():
                if path[-1] == "bias" and above(path):
                    totals[i, k] += float(jnp.sum(b * flat_g[path]))
    return totals  # [B, K]


@pytest.mark.parametrize("family", [None, "dinov2_reg", "dinov2_probe", "siglip"])
def test_conservative_relevance_plus_bias_terms_is_the_cosine(family):
    model, variables, x = _setup(family)
    partners = _partners(model, variables, x, k=2)
    cot = jnp.asarray(_cotangent(model, variables, x, partners), jnp.float32)
    out = explain.against(model, variables, x, partners, method="conservative")
    bias = _bias_terms(model, variables, x, cot, 0)  # [B, K]
    np.testing.assert_allclose(out["total"] + bias, out["score"], atol=2e-5, rtol=1e-4)
    # Without biases the map (plus prefix tokens) is the cosine itself.
    flat = traverse_util.flatten_dict(variables["params"])
    flat = {k: (jnp.zeros_like(v) if k[-1] == "bias" else v) for k, v in flat.items()}
    v0 = {"params": traverse_util.unflatten_dict(flat)}
    out0 = explain.against(model, v0, x, partners, method="conservative")
    np.testing.assert_allclose(out0["total"], out0["score"], atol=2e-6, rtol=1e-5)
    if model.num_prefix_tokens == 0:
        np.testing.assert_allclose(out0["maps"].sum((-2, -1)), out0["score"], atol=2e-6)


@pytest.mark.parametrize("family", ["dinov2_reg", "deit_distilled", "clip"])
def test_conservative_at_the_last_block_is_the_exact_class_token_split(family):
    """For class-token pooling, explain.decompose writes the detached last block out by hand:
    its parts v_j . c are the conservative relevance of the last block's input tokens."""
    model, variables, x = _setup(family)
    partners = _partners(model, variables, x)
    cot = _cotangent(model, variables, x, partners)
    _, out = _apply(model)(variables, x)
    parts, _ = decompose_embedding(model, variables["params"], out)
    v = np.asarray(parts[model.depth - 1], np.float64)  # [B, N', E]
    want = np.einsum("bne,bke->bkn", v, cot)
    got = explain.against(
        model, variables, x, partners, method="conservative", layer=model.depth - 1
    )
    np.testing.assert_allclose(got["maps"].reshape(2, 2, 16), want[..., -16:], atol=1e-5)
    np.testing.assert_allclose(got["total"], want.sum(-1), atol=1e-5)


# --------------------------------------------------------------------------- Chefer et al.


def _attention_and_gradients(model, variables, x, c):
    """A_l [B, H, N', N'] (returned) and dF/dA_l for F = beta . c, by jax.grad through
    ``Probe.attention_deltas`` (written here, independently of the method)."""
    _, out = _apply(model)(variables, x)
    n_all = out["block_inputs"][0].shape[1]
    b, h = x.shape[0], model.num_heads
    keys = list(range(model.depth + (model.pool_type == "map")))  # depth: the MAP head
    zeros = {
        k: jnp.zeros((b, h, 1 if k == model.depth else n_all, n_all), jnp.float32) for k in keys
    }

    @jax.jit
    def f(d):
        emb = model.apply(variables, x, probe=Probe(attention_deltas=d))[0]
        return jnp.sum(emb * c)

    grads = jax.grad(f)(zeros)
    attn = {i: out["attention"][:, i] for i in range(model.depth)}
    if model.depth in keys:
        attn[model.depth] = out["pool_attention"]
    # One directional derivative by central differences: the hook gives dF/dA.
    direction = jax.random.normal(jax.random.PRNGKey(5), zeros[0].shape)

    def central(eps):
        return (f({**zeros, 0: eps * direction}) - f({**zeros, 0: -eps * direction})) / (2 * eps)

    fd = (4 * central(5e-3) - central(1e-2)) / 3  # Richardson: O(eps^4)
    np.testing.assert_allclose(jnp.sum(grads[0] * direction), fd, rtol=2e-3, atol=1e-5)
    to64 = lambda t: {k: np.asarray(v, np.float64) for k, v in t.items()}  # noqa: E731
    return to64(attn), to64(grads)


@pytest.mark.parametrize("family", [None, "dinov2_reg", "deit_distilled", "dinov2_probe", "siglip"])
def test_chefer_relevance_update_rules_by_hand_on_two_blocks(family):
    model, variables, x = _setup(family)
    assert model.depth == 2
    partners = _partners(model, variables, x, k=1)
    cot = _cotangent(model, variables, x, partners, target="cosine")[:, 0]  # the default
    attn, grads = _attention_and_gradients(model, variables, x, jnp.asarray(cot, jnp.float32))
    got = explain.against(model, variables, x, partners, method="chefer")["maps"][:, 0]
    p, n = model.num_prefix_tokens, 16
    for b in range(2):
        abar = [np.maximum(grads[i][b] * attn[i][b], 0).mean(0) for i in range(2)]
        r = np.eye(p + n)
        r = r + abar[0] @ r  # block 0
        r = r + abar[1] @ r  # block 1
        c = model.num_class_tokens
        if model.pool_type == "gap":
            row = r[p:].mean(0)
        elif model.pool_type == "tok":
            row = r[:c].mean(0)  # DeiT: class and distillation tokens
        elif model.pool_type == "gap_tok":
            row = 0.5 * (r[:c].mean(0) + r[p:].mean(0))
        else:  # the MAP probe: one more attention row, no identity path
            top = model.depth
            row = (np.maximum(grads[top][b] * attn[top][b], 0).mean(0) @ r)[0]
        np.testing.assert_allclose(got[b].reshape(-1), row[p:], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- integrated gradients


def test_ig_completeness_error_shrinks_with_steps():
    model, variables, x = _setup("dinov2_reg")
    partners = _partners(model, variables, x)
    cot = _cotangent(model, variables, x, partners)
    emb0 = np.asarray(_apply(model)(variables, jnp.zeros_like(x))[0], np.float64)
    emb = np.asarray(_apply(model)(variables, x)[0], np.float64)
    u = np.asarray(partners, np.float64)
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    want = np.einsum("be,bke->bk", emb, cot) - np.einsum("be,bke->bk", emb0, cot)
    cos = np.einsum("be,bke->bk", emb / np.linalg.norm(emb, axis=-1, keepdims=True), u)
    np.testing.assert_allclose(np.einsum("be,bke->bk", emb, cot), cos, atol=1e-6)
    errors = []
    for steps in (2, 8, 32):
        out = explain.against(model, variables, x, partners, method="ig", steps=steps)
        np.testing.assert_allclose(out["total"], out["maps"].sum((-2, -1)), atol=1e-6)
        errors.append(np.abs(np.asarray(out["total"], np.float64) - want).max())
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < errors[0] / 20 and errors[2] < 2e-3, errors


# --------------------------------------------------------------------------- jit, vmap, galleries

PAIRED_KEYS = {"map_a", "map_b", "score", "rest_a", "rest_b", "total_a", "total_b"}
PAIRED_KEYS |= {"upsampled_a", "upsampled_b"}
CROSS_KEYS = {"maps_q", "maps_g", "score", "rest_q", "rest_g"}


def test_one_door_takes_images_or_the_papers_per_image_objects():
    """The paper's method through the one door: the same keys as every method; images
    (``Inputs``) or its precomputed per-image objects (``Features``, ``Folded``: the fold
    fast path) give the same cross maps, equal to ``paired_maps`` pair by pair and to the
    generic path every method has (``prepare`` + pullback, here through ``against``)."""
    model, variables, x = _setup("dinov2_reg")
    xb = jnp.flip(x, axis=(0, 2)) + 0.1
    out = explain.paired_maps(model, variables, x, xb, convention="transpose")
    assert set(out) == PAIRED_KEYS
    np.testing.assert_allclose(out["total_a"], out["map_a"].sum((-2, -1)), atol=1e-6)
    iq, ig = explain.Inputs(model, variables, x), explain.Inputs(model, variables, xb)
    fq = explain.features(model, variables, x, head_fusion="mean")
    fg = explain.fold(explain.features(model, variables, xb), convention="transpose")
    by_images = explain.cross_maps(iq, ig, convention="transpose")
    by_objects = explain.cross_maps(fq, fg, convention="transpose")
    assert set(by_images) == set(by_objects) == CROSS_KEYS
    k = jnp.arange(N)
    for key, side in (("maps_q", "map_a"), ("maps_g", "map_b"), ("rest_q", "rest_a")):
        np.testing.assert_allclose(by_images[key], by_objects[key], atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(by_images[key][k, k], out[side], atol=1e-6, rtol=1e-5)
    generic = explain.against(
        model, variables, x, _apply(model)(variables, xb)[0], convention="transpose"
    )
    np.testing.assert_allclose(generic["maps"], out["map_a"], atol=1e-6, rtol=1e-5)
    # Precomputed objects are the paper's alone; other methods take images.
    with pytest.raises(ValueError, match=r"method='chefer'\) takes the queries as explain.Inputs"):
        explain.cross_maps(fq, ig, method="chefer")
    with pytest.raises(ValueError, match="or Features or Folded, got Array"):
        explain.cross_maps(x, ig)
    with pytest.raises(ValueError, match="convention must be one of"):
        explain.cross_maps(iq, ig, convention="rows")


@pytest.mark.parametrize("method", ["gradxinput", "chefer", "conservative", "ig"])
def test_batched_pairs_equal_one_pair_at_a_time_and_cross_maps(method):
    # steps=2: the generic cross maps' ``against`` is then the ig test's compiled program.
    opts = {"steps": 2} if method == "ig" else {}
    model, variables, x = _setup("dinov2_reg")
    xb = jnp.flip(x, axis=(0, 2)) + 0.1
    out = explain.paired_maps(model, variables, x, xb, method=method, upsampled=True, **opts)
    assert out["map_a"].shape == (N, 4, 4) and out["upsampled_b"].shape == (N, 16, 16)
    assert set(out) == PAIRED_KEYS  # the same keys for every method, the paper's included
    for i in range(N):  # the batch of 1: the one program of this module at another size
        one = explain.paired_maps(
            model, variables, x[i : i + 1], xb[i : i + 1], method=method, upsampled=False, **opts
        )
        for key in ("map_a", "map_b", "score", "rest_a", "total_b"):
            np.testing.assert_allclose(one[key][0], out[key][i], atol=2e-6, rtol=1e-5)
    cross = explain.cross_maps(
        explain.Inputs(model, variables, x),
        explain.Inputs(model, variables, xb),
        method=method,
        **opts,
    )
    k = jnp.arange(N)
    assert cross["maps_q"].shape == (N, N, 4, 4)
    np.testing.assert_allclose(cross["maps_q"][k, k], out["map_a"], atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(cross["maps_g"][k, k], out["map_b"], atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(cross["score"][k, k], out["score"], atol=1e-6)
    # Under vmap over an extra axis of pairs (the per-pair function is traceable).
    emb_b = _apply(model)(variables, xb)[0]
    fn = jax.vmap(
        lambda xi, ei: explain.against(model, variables, xi, ei, method=method, **opts)["maps"]
    )
    v = fn(x[:, None], emb_b[:, None])[:, 0]
    np.testing.assert_allclose(v, out["map_a"], atol=2e-6, rtol=1e-5)


# --------------------------------------------------------------------------- the cosine target


@pytest.mark.parametrize("method", ["paper", "gradxinput", "chefer", "conservative"])
def test_cosine_target_is_the_score_map_minus_s_times_the_self_map(method):
    """target="cosine" explains the cosine's own gradient (|beta| moves too): by linearity in
    the cotangent, the map against p minus s(x, p) times the map against x itself; for
    Chefer's clipped rule only the gradient changes, so only the linear methods are exact."""
    model, variables, x = _setup("dinov2_reg")
    # K = 2 partners (itself: twice), the shape of the other tests' calls: their programs serve.
    partners = _partners(model, variables, x, k=2)
    emb = _apply(model)(variables, x)[0]
    got = explain.against(model, variables, x, partners, method=method, target="cosine")
    if method == "chefer":  # its default is the cosine
        plain = explain.against(model, variables, x, partners, method=method, target="score")
        assert not np.allclose(got["maps"], plain["maps"], atol=1e-3)
        return
    score = explain.against(model, variables, x, partners, method=method)
    twice = jnp.broadcast_to(emb[:, None], partners.shape)
    itself = explain.against(model, variables, x, twice, method=method)
    want = score["maps"] - score["score"][..., None, None] * itself["maps"]
    np.testing.assert_allclose(got["maps"], want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(itself["score"], 1.0, atol=1e-6)
    if method == "conservative":  # Euler: relevance + bias terms = the cosine's radial part
        flat = traverse_util.flatten_dict(variables["params"])
        flat = {k: (jnp.zeros_like(v) if k[-1] == "bias" else v) for k, v in flat.items()}
        v0 = {"params": traverse_util.unflatten_dict(flat)}
        out0 = explain.against(model, v0, x, partners, method=method, target="cosine")
        np.testing.assert_allclose(out0["total"], 0.0, atol=2e-6)
    with pytest.raises(ValueError, match="target='dot'"):
        explain.against(model, variables, x, partners, method=method, target="dot")
