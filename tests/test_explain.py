"""The paper's formulas (eq. 1-6) against independent numpy references and their invariants."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax import explain as ex
from pairviz_jax.explain import api
from pairviz_jax.models import ViT, decode_variant
from tests import reference

RNG = np.random.default_rng(0)


def _tokens(*shape):
    return jnp.asarray(RNG.normal(size=shape) + 0.3, jnp.float32)


def _attention(*lead, layers=3, heads=2, n=9):
    logits = RNG.normal(size=(*lead, layers, heads, n, n)) * 2
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)


# --- eq. 1-4 -------------------------------------------------------------------------------


def test_gamma_sums_to_the_cosine_similarity():
    a, b = _tokens(5, 16, 8), _tokens(5, 16, 8)
    gamma_a, gamma_b, score = ex.token_similarity(a, b)
    beta_a, beta_b = np.asarray(a).mean(1), np.asarray(b).mean(1)
    cos = (
        (beta_a * beta_b).sum(-1)
        / np.linalg.norm(beta_a, axis=-1)
        / np.linalg.norm(beta_b, axis=-1)
    )
    np.testing.assert_allclose(score, cos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gamma_a.sum(-1), score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gamma_b.sum(-1), score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ex.cosine(beta_a, beta_b), cos, rtol=1e-5, atol=1e-6)


def test_gamma_matches_the_authors_per_token_loop():
    a, b = _tokens(16, 8), _tokens(9, 8)  # different token counts are fine
    gamma_a, gamma_b, score = ex.token_similarity(a, b)
    ref_a, ref_b, ref_score = reference.spatial_similarity(a, b)
    np.testing.assert_allclose(gamma_a, ref_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gamma_b, ref_b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(score, ref_score, rtol=1e-5)


def test_token_similarity_under_jit_vmap_and_broadcast():
    a, b = _tokens(2, 3, 16, 8), _tokens(2, 3, 16, 8)
    direct = ex.token_similarity(a, b)
    jitted = jax.jit(ex.token_similarity)(a, b)
    mapped = jax.vmap(jax.vmap(ex.token_similarity))(a, b)
    # Every pair against the authors' per-token loop (tests/reference.py), float64.
    for i in range(2):
        for j in range(3):
            want = reference.spatial_similarity(a[i, j], b[i, j])
            for got in (direct, jitted, mapped):
                for g, w in zip(got, want, strict=True):
                    np.testing.assert_allclose(g[i, j], w, rtol=1e-5, atol=1e-6)
    for d in (direct, jitted, mapped):
        assert [x.dtype for x in d] == [jnp.float32] * 3
        assert d[0].shape == d[1].shape == (2, 3, 16) and d[2].shape == (2, 3)
    # One query broadcast against three gallery items: each equals its own pair.
    g_a, g_b, s = ex.token_similarity(a[0, :1], b[0])
    assert g_a.shape == g_b.shape == (3, 16) and s.shape == (3,)
    for j in range(3):
        want = reference.spatial_similarity(a[0, 0], b[0, j])
        for g, w in zip((g_a[j], g_b[j], s[j]), want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # ... and under jit and vmap (the query held fixed) the same numbers.
    g_a2, g_b2, s2 = jax.jit(jax.vmap(ex.token_similarity, in_axes=(None, 0)))(a[0, 0], b[0])
    np.testing.assert_allclose(g_a2, g_a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g_b2, g_b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s2, s, rtol=1e-6, atol=1e-7)
    # bfloat16 tokens: contributions are computed in float32.
    assert ex.token_similarity(a.astype(jnp.bfloat16), b)[0].dtype == jnp.float32


def test_token_similarity_errors():
    with pytest.raises(ValueError, match="same width D"):
        ex.token_similarity(_tokens(4, 8), _tokens(4, 6))
    with pytest.raises(ValueError, match="rank"):
        ex.token_similarity(_tokens(8), _tokens(8))
    with pytest.raises(ValueError, match="NaN or Inf"):
        ex.token_similarity(_tokens(4, 8).at[0, 0].set(jnp.nan), _tokens(4, 8))


# --- eq. 5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("start", [0, 1])
def test_rollout_matches_the_authors_loop(fusion, start):
    attn = _attention(4)
    r = ex.rollout(attn, head_fusion=fusion, start_layer=start)
    assert r.shape == (4, 9, 9) and r.dtype == jnp.float32
    for i in range(4):
        np.testing.assert_allclose(
            r[i], reference.rollout(np.asarray(attn[i]), fusion, start), atol=1e-6
        )
    np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)  # rows are distributions


def test_rollout_order_is_last_block_on_the_left():
    # Two blocks, one head; the product must be A_2 @ A_1, not A_1 @ A_2.
    attn = _attention(layers=2, heads=1, n=4)
    a = [(m[0] + np.eye(4)) / (m[0] + np.eye(4)).sum(-1, keepdims=True) for m in np.asarray(attn)]
    np.testing.assert_allclose(ex.rollout(attn), a[1] @ a[0], atol=1e-6)
    assert not np.allclose(a[1] @ a[0], a[0] @ a[1], atol=1e-3)


def test_rollout_pre_fused_input_and_jit_vmap():
    attn = _attention(3)
    fused = attn.mean(-3)
    np.testing.assert_allclose(ex.rollout(fused, head_fusion=None), ex.rollout(attn), atol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.jit(ex.rollout))(attn), ex.rollout(attn), atol=1e-6)


def test_rollout_errors():
    with pytest.raises(ValueError, match="square"):
        ex.rollout(jnp.ones((2, 2, 3, 4)))
    with pytest.raises(ValueError, match="rank"):
        ex.rollout(jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="head_fusion"):
        ex.rollout(_attention(), head_fusion="median")
    with pytest.raises(ValueError, match="start_layer"):
        ex.rollout(_attention(), start_layer=3)
    with pytest.raises(ValueError, match="NaN or Inf"):
        ex.rollout(_attention().at[0, 0, 0, 0].set(jnp.inf))


# --- eq. 6 ---------------------------------------------------------------------------------


def test_redistribute_conventions():
    r = ex.rollout(_attention(2))
    gamma = _tokens(2, 9)
    authors = ex.redistribute(r, gamma)
    transpose = ex.redistribute(r, gamma, convention="transpose")
    np.testing.assert_allclose(authors, np.einsum("bij,bj->bi", r, gamma), atol=1e-6)
    np.testing.assert_allclose(transpose, np.einsum("bji,bj->bi", r, gamma), atol=1e-6)
    # The transpose convention keeps the total (rows of R sum to one) ...
    np.testing.assert_allclose(transpose.sum(-1), gamma.sum(-1), rtol=1e-5, atol=1e-6)
    # ... the authors' generally does not.
    assert not np.allclose(authors.sum(-1), gamma.sum(-1), atol=1e-3)
    with pytest.raises(ValueError, match="convention"):
        ex.redistribute(r, gamma, convention="rows")


def test_redistribute_skips_prefix_tokens():
    r = ex.rollout(_attention(n=10))  # one class token in front of 9 patches
    gamma = _tokens(9)
    np.testing.assert_allclose(ex.redistribute(r, gamma), r[1:, 1:] @ gamma, atol=1e-6)
    full = np.concatenate([[0.0], np.asarray(gamma)])
    np.testing.assert_allclose(
        ex.redistribute(r, gamma, "transpose"), (np.asarray(r).T @ full)[1:], atol=1e-6
    )
    with pytest.raises(ValueError, match="different"):
        ex.redistribute(r[:5, :5], gamma)


def test_upsample_is_opencv_inter_cubic():
    m = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    up = ex.upsample(jnp.asarray(m), (32, 20))
    assert up.shape == (3, 32, 20)
    for i in range(3):
        np.testing.assert_allclose(up[i], reference.resize_cubic(m[i], (32, 20)), atol=1e-5)
    # a = -0.5 (the softer Keys kernel) is measurably different.
    assert np.abs(reference.resize_cubic(m[0], (32, 20), a=-0.5) - up[0]).max() > 1e-2


# --- the whole method on a model ----------------------------------------------------------


@functools.cache  # one model and one set of parameters per configuration, shared by tests
def _model(**kw):
    model = ViT(**decode_variant("Tiny/4"), **kw)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    return model, variables


def _images(b, seed, size=16):
    return jax.random.normal(jax.random.PRNGKey(seed), (b, size, size, 3))


AUTHORS = dict(class_token=True, keep_class_token=False, proj_dim=8)
KEPT_CLS = dict(class_token=True, keep_class_token=True)
# Every paired_maps call on a model explains PAIRS pairs (the data-parallel test's 8 devices),
# the same images where it can: one compiled program per (model, options) serves the module.
PAIRS = 8


@pytest.mark.parametrize("kw", [AUTHORS, KEPT_CLS], ids=["authors_model", "kept_cls"])
@pytest.mark.parametrize("convention", ["authors", "transpose"])
def test_paired_maps_equal_a_per_pair_numpy_computation(kw, convention):
    model, variables = _model(**kw)
    xa, xb = _images(PAIRS, 1), _images(PAIRS, 2)
    out = ex.paired_maps(model, variables, xa, xb, convention=convention)
    assert out["map_a"].shape == (PAIRS, 4, 4) and out["upsampled_a"].shape == (PAIRS, 16, 16)
    for x, key in [(xa, "a"), (xb, "b")]:
        _, o = model.apply(variables, x)
        attn = np.asarray(o["attention"], np.float64)
        if key == "a":
            tok_a, att_a = np.asarray(o["tokens"], np.float64), attn
        else:
            tok_b, att_b = np.asarray(o["tokens"], np.float64), attn
    p = 1 if kw.get("keep_class_token", True) and kw.get("class_token") else 0
    for i in range(PAIRS):
        g_a, g_b, score = reference.spatial_similarity(tok_a[i], tok_b[i])
        maps = []
        for g, att in [(g_a, att_a[i]), (g_b, att_b[i])]:
            r = reference.rollout(att)[p:, p:]
            maps.append((r if convention == "authors" else r.T) @ g)
        np.testing.assert_allclose(out["score"][i], score, rtol=1e-5)
        np.testing.assert_allclose(out["map_a"][i].ravel(), maps[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out["map_b"][i].ravel(), maps[1], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            out["upsampled_a"][i],
            reference.resize_cubic(maps[0].reshape(4, 4), (16, 16)),
            rtol=1e-4,
            atol=1e-6,
        )
    if convention == "transpose" and p == 0:
        np.testing.assert_allclose(out["map_a"].sum((1, 2)), out["score"], rtol=1e-4, atol=1e-6)


def test_paired_maps_batch_equals_single_pairs_and_does_not_recompile():
    model, variables = _model(**AUTHORS)
    xa, xb = _images(PAIRS, 3), _images(PAIRS, 4)
    batch = ex.paired_maps(model, variables, xa, xb)
    opts = dict(convention="authors", head_fusion="mean", start_layer=0, target="score")
    fn = api._paired_fn("paper", tuple(sorted(opts.items())), model, True)
    size = fn._cache_size()
    again = ex.paired_maps(model, variables, xb, xa)  # new values, same shapes
    assert fn._cache_size() == size
    np.testing.assert_allclose(again["map_a"], batch["map_b"], rtol=1e-5, atol=1e-7)
    for i in (0, PAIRS - 1):
        single = ex.paired_maps(model, variables, xa[i : i + 1], xb[i : i + 1])
        np.testing.assert_allclose(single["map_a"][0], batch["map_a"][i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(single["score"][0], batch["score"][i], rtol=1e-5)


def test_paired_maps_on_images_of_another_size_than_the_parameters():
    model, variables = _model(**AUTHORS)
    with pytest.raises(ValueError, match="position embedding holds 17 tokens"):
        ex.paired_maps(model, variables, _images(2, 1), _images(2, 2, size=12))


@pytest.mark.parametrize("kw", [AUTHORS, KEPT_CLS], ids=["authors_model", "kept_cls"])
@pytest.mark.parametrize("convention", ["authors", "transpose"])
def test_cross_maps_equal_paired_maps_pair_by_pair(kw, convention):
    model, variables = _model(**kw)
    xq, xg = _images(2, 5), _images(4, 6)  # 2 x 4 = PAIRS pairs
    fq = ex.features(model, variables, xq, head_fusion="mean")
    fg = ex.features(model, variables, xg)  # all heads kept: fused in the rollout
    assert fq.attention.shape == (2, 2, *[16 + int(kw.get("keep_class_token", False))] * 2)
    assert fg.attention.shape == (4, 2, 2, *[16 + int(kw.get("keep_class_token", False))] * 2)
    cross = ex.cross_maps(fq, fg, convention=convention)
    assert cross["maps_q"].shape == (2, 4, 4, 4) and cross["score"].shape == (2, 4)
    qi, gi = np.meshgrid(np.arange(2), np.arange(4), indexing="ij")
    pm = ex.paired_maps(model, variables, xq[qi.ravel()], xg[gi.ravel()], convention=convention)
    np.testing.assert_allclose(cross["maps_q"].reshape(8, 4, 4), pm["map_a"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cross["maps_g"].reshape(8, 4, 4), pm["map_b"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cross["score"].ravel(), pm["score"], rtol=1e-5, atol=1e-6)


def test_class_map_is_the_sum_of_member_maps():
    model, variables = _model(**AUTHORS)
    fq = ex.features(model, variables, _images(2, 7))
    fg = ex.features(model, variables, _images(4, 8))
    cross = ex.cross_maps(fq, fg)
    members = np.array([1, 0, 1, 1], bool)
    np.testing.assert_allclose(
        ex.class_map(fq, fg, members), cross["maps_q"][:, members].sum(1), rtol=1e-4, atol=1e-6
    )
    per_query = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    cm = ex.class_map(fq, fg, per_query)
    np.testing.assert_allclose(cm[0], cross["maps_q"][0, :2].sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cm[1], cross["maps_q"][1, 2:].sum(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="members"):
        ex.class_map(fq, fg, np.ones(3))


def test_rollout_map_class_row_or_mean_over_outputs():
    for kw, p in [(KEPT_CLS, 1), (AUTHORS, 0)]:
        model, variables = _model(**kw)
        f = ex.features(model, variables, _images(2, 9))
        r = np.asarray(f.rollout())
        expected = r[:, 0, 1:] if p else r.mean(1)
        np.testing.assert_allclose(ex.rollout_map(f).reshape(2, 16), expected, atol=1e-6)


class _TinyCNN(nn.Module):
    """A conv net with the ViT's interface and no attention (the CNN baseline's path)."""

    has_attention = False
    pool_type = "gap"

    def grid(self, shape):
        return shape[-3] // 2, shape[-2] // 2

    @nn.compact
    def __call__(self, x, *, train=False, probe=None):
        y = nn.Conv(6, (2, 2), strides=(2, 2))(x)
        tokens = y.reshape(y.shape[0], -1, 6)
        return tokens.mean(1), {"tokens": tokens, "embedding": tokens.mean(1)}


def test_models_without_attention_get_eq4_maps_without_rollout():
    model = _TinyCNN()
    xa, xb = _images(2, 1, size=8), _images(2, 2, size=8)
    variables = model.init(jax.random.PRNGKey(0), xa)
    out = ex.paired_maps(model, variables, xa, xb)
    _, oa = model.apply(variables, xa)
    _, ob = model.apply(variables, xb)
    g_a, _, score = ex.token_similarity(oa["tokens"], ob["tokens"])
    np.testing.assert_allclose(out["map_a"].reshape(2, 16), g_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["map_a"].sum((1, 2)), score, rtol=1e-5, atol=1e-6)
    f = ex.features(model, variables, xa)
    assert f.attention is None
    # No position embedding: the two images of a pair may differ in size.
    mixed = ex.paired_maps(model, variables, xa, _images(2, 3, size=12))
    assert mixed["map_b"].shape == (2, 6, 6) and mixed["upsampled_b"].shape == (2, 12, 12)
    with pytest.raises(ValueError, match="attention"):
        ex.rollout_map(f)


def test_paired_maps_errors_are_clear():
    model, variables = _model(**AUTHORS)
    x = _images(2, 1)
    with pytest.raises(ValueError, match="Features"):
        ex.cross_maps(x, x)
    with pytest.raises(ValueError, match="same number of pairs"):
        ex.paired_maps(model, variables, x, x[:1])
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ex.paired_maps(model, variables, x[0], x[0])
    with pytest.raises(ValueError, match="patch size"):
        ex.paired_maps(model, variables, x[:, :14], x[:, :14])
    with pytest.raises(ValueError, match="NaN or Inf"):
        ex.paired_maps(model, variables, x.at[0, 0, 0, 0].set(jnp.nan), x)
    with pytest.raises(ValueError, match="convention"):
        ex.paired_maps(model, variables, x, x, convention="other")
    with pytest.raises(ValueError, match="start_layer"):
        ex.paired_maps(model, variables, x, x, start_layer=2)
    with pytest.raises(ValueError, match="not a square"):
        ex.to_grid(jnp.zeros((2, 12)))
    assert ex.to_grid(jnp.zeros((2, 16))).shape == (2, 4, 4)
    assert ex.to_grid(jnp.zeros((2, 12)), grid=(3, 4)).shape == (2, 3, 4)


def test_bfloat16_model_gives_float32_explanations():
    model, variables = _model(**AUTHORS)
    model16 = model.clone(dtype=jnp.bfloat16, patch_size=[4, 4])  # a list is fine too
    xa, xb = _images(PAIRS, 1), _images(PAIRS, 2)
    ref = ex.paired_maps(model, variables, xa, xb)
    out = ex.paired_maps(model16, variables, xa, xb)
    for k in ref:
        assert out[k].dtype == jnp.float32, k
    np.testing.assert_allclose(out["score"], ref["score"], atol=0.02)
    corr = np.corrcoef(np.ravel(out["map_a"]), np.ravel(ref["map_a"]))[0, 1]
    assert corr > 0.95


def test_paired_maps_data_parallel_over_fake_devices():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 8  # tests/conftest.py
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    model, variables = _model(**AUTHORS)
    xa, xb = _images(PAIRS, 1), _images(PAIRS, 2)
    ref = ex.paired_maps(model, variables, xa, xb)
    shard = NamedSharding(mesh, P("data"))
    out = ex.paired_maps(
        model,
        jax.device_put(variables, NamedSharding(mesh, P())),
        jax.device_put(xa, shard),
        jax.device_put(xb, shard),
    )
    assert len(out["map_a"].sharding.device_set) == 8
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-6)
