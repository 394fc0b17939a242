"""Paired maps for every pooling: the exact token split and its redistribution."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax import explain as ex
from pairviz_jax.explain.decompose import decompose_embedding
from pairviz_jax.models import Probe, ViT, decode_variant
from tests import reference
from tests.test_vit_families import FAMILIES, _random_variables

POOLED = ["dinov2_reg", "dinov2_probe", "clip", "siglip", "deit_distilled"]


def _setup(family, n=2, seed=0):
    model = ViT(**decode_variant("Tiny/4"), **FAMILIES[family][0])
    x = jax.random.normal(jax.random.PRNGKey(seed + 3), (n, 8, 8, 3))
    return model, _variables(family, seed), x


@functools.cache
def _variables(family, seed):
    """One family's random parameters, made once per module.

    They depend on the seed and the parameter shapes only, not on the images or their
    number, so the shapes traced on one 8 x 8 image give every test's parameters.
    """
    model = ViT(**decode_variant("Tiny/4"), **FAMILIES[family][0])
    return _random_variables(model, jnp.zeros((1, 8, 8, 3)), seed)


def _decomposed(model, variables, x):
    """The forward's ``(embedding, out)`` with the embedding's split (``parts``, ``rest``)."""
    emb, out = model.apply(variables, x)
    out["parts"], out["rest"] = decompose_embedding(model, variables["params"], out)
    return emb, out


# Compiled once per model and shape: op by op, every family's forward compiles each of its
# few hundred operations on its own (the references below are computed from these outputs).
# Every test runs 2 images (one compilation of each function per family): ``ex.features``
# (which splits the embedding with ``decompose_embedding`` under jit for every pooling but
# ``gap``) and the plain forward ``_apply`` (the block inputs, the partner's embedding).
_decomposed_jit = jax.jit(_decomposed, static_argnums=0)
_apply = jax.jit(lambda model, variables, x: model.apply(variables, x), static_argnums=0)


def _split(model, variables, x):
    """``(embedding, {"parts", "rest", "attention"})`` of 2 images, compiled."""
    if model.pool_type == "gap":  # ex.features leaves gap's split to f.contributions()
        return _decomposed_jit(model, variables, x)
    f = ex.features(model, variables, x)
    return f.embedding, {"parts": f.parts, "rest": f.rest, "attention": f.attention}


@pytest.mark.parametrize("family", POOLED + ["dinov2_g"])
def test_parts_and_rest_sum_to_the_embedding_under_jit(family):
    model, variables, x = _setup(family)
    emb, out = _split(model, variables, x)  # the numpy-reference test's compilation
    total = sum(v.sum(1) for v in out["parts"].values()) + out["rest"]
    np.testing.assert_allclose(total, emb, atol=2e-6, rtol=1e-5)
    for v in out["parts"].values():
        assert v.shape == (2, 4 + model.num_prefix_tokens, model.embedding_dim)
        assert v.dtype == jnp.float32


@pytest.mark.parametrize("family", POOLED)
def test_parts_equal_the_jvp_of_the_detached_model(family):
    """v_j is the detached model's linear part applied to token j (independent: autodiff)."""
    model, variables, x = _setup(family)
    _, out = _split(model, variables, x)
    inputs = _apply(model, variables, x)[1]["block_inputs"]
    levels = [
        level
        for level in out["parts"]
        # gap_tok's patch half's split is eq. 4 (biases included), tested elsewhere
        if not (model.pool_type == "gap_tok" and level == model.depth)
    ]

    @jax.jit  # every level's Jacobian-vector products in one compilation
    def jvps(inputs):
        got = {}
        for level in levels:
            tokens = inputs[level]

            def emb(delta, level=level):
                probe = Probe(detach=True, block_deltas={level: delta})
                return model.apply(variables, x, probe=probe)[0]

            def jvp_token(j, tokens=tokens, emb=emb):
                tangent = jnp.zeros_like(tokens).at[:, j].set(tokens[:, j])
                return jax.jvp(emb, (jnp.zeros_like(tokens),), (tangent,))[1]

            got[level] = jax.vmap(jvp_token)(jnp.arange(tokens.shape[1]))  # [N', B, E]
        return got

    d = model.width
    for level, jv in jvps({level: inputs[level] for level in levels}).items():
        part = out["parts"][level]
        if model.pool_type == "gap_tok":
            jv, part = jv[..., :d], part[..., :d]  # the class-token half
        for i in range(2):
            np.testing.assert_allclose(part[i], jv[:, i], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", POOLED)
@pytest.mark.parametrize("convention", ["authors", "transpose"])
def test_paired_maps_for_every_pooling_match_a_numpy_reference(family, convention):
    model, variables, x = _setup(family, n=2)
    xb = x[::-1] + 0.3
    out = ex.paired_maps(model, variables, x, xb, convention=convention, upsampled=False)
    assert out["map_a"].shape == (2, 2, 2) and out["score"].shape == (2,)
    for side, imgs, partner in [("a", x, xb), ("b", xb, x)]:
        emb, o = _split(model, variables, imgs)
        emb_p, _ = _apply(model, variables, partner)
        attn = np.asarray(o["attention"], np.float64)
        p = model.num_prefix_tokens
        for i in range(2):
            u = np.asarray(emb_p[i], np.float64)
            u /= np.linalg.norm(u)
            norm = np.linalg.norm(np.asarray(emb[i], np.float64))
            expected = np.zeros(4)
            for level, v in o["parts"].items():
                gamma = np.asarray(v[i], np.float64) @ u / norm
                if level > 0:
                    r = reference.rollout(attn[i, :level])
                    m = r if convention == "authors" else r.T
                else:
                    m = np.eye(len(gamma))
                expected += (m @ gamma)[p:]
            np.testing.assert_allclose(
                out[f"map_{side}"][i].reshape(-1), expected, atol=2e-6, rtol=1e-4
            )
            rest = np.asarray(o["rest"][i], np.float64) @ u / norm
            np.testing.assert_allclose(out[f"rest_{side}"][i], rest, atol=1e-6, rtol=1e-4)
    score = ex.cosine(_apply(model, variables, x)[0], _apply(model, variables, xb)[0])
    np.testing.assert_allclose(out["score"], score, rtol=1e-5)


@pytest.mark.parametrize("family", POOLED)
def test_transpose_maps_account_for_the_score(family):
    """map.sum() + rest + what stays on the prefix tokens == the cosine."""
    model, variables, x = _setup(family, seed=1)
    xb = jnp.roll(x, 1, axis=0)
    out = ex.paired_maps(model, variables, x, xb, convention="transpose", upsampled=False)
    fa = ex.features(model, variables, x)
    fb = ex.features(model, variables, xb)

    @jax.jit  # one compilation instead of each operation's on its own
    def account(fa, fb):
        parts, _ = fa.contributions()
        ub = fb.embedding / jnp.linalg.norm(fb.embedding, axis=-1, keepdims=True)
        norm = jnp.linalg.norm(fa.embedding, axis=-1)
        total_gamma = sum(jnp.einsum("bte,be->b", v, ub) for v in parts.values()) / norm
        # Rows of R sum to one, so R^T keeps the total: patches + prefix == all tokens.
        prefix = 0.0
        p = model.num_prefix_tokens
        for level, v in parts.items():
            m = ex.part_matrix(fa.attention, level, p + 4, "transpose")
            gamma = jnp.einsum("bte,be->bt", v, ub) / norm[:, None]
            prefix = prefix + jnp.einsum("bnt,bt->bn", m, gamma)[:, :p].sum(1)
        return total_gamma, prefix

    total_gamma, prefix = account(fa, fb)
    np.testing.assert_allclose(out["map_a"].sum((1, 2)) + prefix, total_gamma, atol=2e-6)
    np.testing.assert_allclose(total_gamma + out["rest_a"], out["score"], atol=2e-6)


@pytest.mark.parametrize("family", POOLED)
def test_cross_maps_equal_paired_maps_for_every_pooling(family):
    model, variables, x = _setup(family, seed=2)
    g = jnp.flip(x, axis=1) * 0.7
    fq = ex.features(model, variables, x, head_fusion="mean")
    fg = ex.features(model, variables, g, head_fusion="mean")
    cross = ex.cross_maps(fq, fg, convention="transpose")
    for qi in range(2):
        out = ex.paired_maps(
            model,
            variables,
            jnp.repeat(x[qi : qi + 1], 2, axis=0),
            g,
            convention="transpose",
            upsampled=False,
        )
        np.testing.assert_allclose(cross["maps_q"][qi], out["map_a"], atol=2e-6, rtol=1e-4)
        np.testing.assert_allclose(cross["maps_g"][qi], out["map_b"], atol=2e-6, rtol=1e-4)
        np.testing.assert_allclose(cross["score"][qi], out["score"], atol=1e-6)
        np.testing.assert_allclose(cross["rest_q"][qi], out["rest_a"], atol=2e-6)


def test_gap_split_is_eq4_and_has_no_rest():
    model = ViT(**decode_variant("Tiny/4"), class_token=True, proj_dim=6)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    variables = _random_variables(model, x)
    f = ex.features(model, variables, x)
    assert f.parts is None
    parts, rest = f.contributions()
    ((level, v),) = parts.items()
    assert level == model.depth
    np.testing.assert_allclose(v[:, 1:], f.tokens / 4, rtol=1e-6)
    np.testing.assert_allclose(v[:, 0], 0.0)
    np.testing.assert_allclose(rest, 0.0)
    out = ex.paired_maps(model, variables, x, x[::-1], convention="transpose")
    np.testing.assert_allclose(out["rest_a"], 0.0, atol=1e-7)


def test_paired_maps_vmap_over_a_leading_axis():
    model, variables, x = _setup("clip", n=2)
    f = jax.vmap(lambda a, b: ex.paired_maps(model, variables, a, b, upsampled=False)["map_a"])
    stacked = jnp.stack([x, x[::-1]])
    out = f(stacked, stacked[:, ::-1])
    direct = ex.paired_maps(model, variables, x, x[::-1], upsampled=False)["map_a"]
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(out[0], direct, atol=1e-6)


@pytest.mark.parametrize("family", ["dinov2_reg", "siglip"])
@pytest.mark.parametrize("level", ["patch", "token"])
def test_correspondence_for_every_pooling_sums_to_the_score(family, level):
    model, variables, x = _setup(family, n=2, seed=4)
    fa = ex.features(model, variables, x)
    fb = ex.features(model, variables, x[::-1] * 0.5)
    c = ex.correspondence(fa, fb, aligned=True, level=level)
    total = c["corr"].sum((-2, -1)) + c["rest_a"].sum(-1) + c["rest_b"].sum(-1) + c["rest"]
    np.testing.assert_allclose(total, c["score"], atol=2e-6)
    if level == "patch":
        maps = ex.paired_maps(
            model, variables, x, x[::-1] * 0.5, convention="transpose", upsampled=False
        )
        np.testing.assert_allclose(c["map_a"], maps["map_a"], atol=2e-6)
        np.testing.assert_allclose(
            c["corr"].sum(-1) + c["rest_a"], c["map_a"].reshape(2, -1), atol=2e-6
        )
