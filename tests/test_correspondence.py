"""Patch-to-patch correspondence: sums, marginals, the formula, and a pasted patch found."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax import explain as ex
from pairviz_jax.models import ViT, decode_variant
from tests import reference

AUTHORS = dict(class_token=True, keep_class_token=False, proj_dim=8)  # the paper's layout
KEPT_CLS = dict(class_token=True, keep_class_token=True)


def _model(size=16, **kw):
    model = ViT(**decode_variant("Tiny/4"), **kw)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    return model, variables


def _images(b, seed, size=16):
    return jax.random.normal(jax.random.PRNGKey(seed), (b, size, size, 3))


def _numpy_parts(model, variables, x, prefix):
    """Tokens and rollout R (patch block) of each image, float64, from the model itself."""
    _, o = jax.jit(model.apply)(variables, x)
    attn = np.asarray(o["attention"], np.float64)
    tokens = np.asarray(o["tokens"], np.float64)
    rolls = [reference.rollout(a)[prefix:, prefix:] for a in attn]
    return tokens, rolls


def _numpy_p(tok_a, tok_b):
    """P_ij = <alpha_a_i, alpha_b_j> / (N_a N_b |beta_a| |beta_b|) (eq. 1-4 over pairs)."""
    beta_a, beta_b = tok_a.mean(0), tok_b.mean(0)
    denom = len(tok_a) * len(tok_b) * np.linalg.norm(beta_a) * np.linalg.norm(beta_b)
    return tok_a @ tok_b.T / denom


@pytest.fixture(scope="module")
def paper_model():
    model, variables = _model(**AUTHORS)
    xa, xb = _images(3, 1), _images(3, 2)
    fa = ex.features(model, variables, xa, head_fusion="mean")
    fb = ex.features(model, variables, xb, head_fusion="mean")
    return model, variables, xa, xb, fa, fb


# --- sums and marginals -------------------------------------------------------------------


def test_transpose_sums_to_the_cosine_and_its_marginals_are_the_paired_maps(paper_model):
    model, variables, xa, xb, fa, fb = paper_model
    out = ex.correspondence(fa, fb, aligned=True)  # default: transpose
    pm = ex.paired_maps(model, variables, xa, xb, convention="transpose", upsampled=False)
    corr = np.asarray(out["corr"])
    assert corr.shape == (3, 16, 16) and corr.dtype == np.float32
    np.testing.assert_allclose(corr.sum((1, 2)), pm["score"], atol=1e-5)
    np.testing.assert_allclose(corr.sum(2), np.asarray(pm["map_a"]).reshape(3, 16), atol=1e-5)
    np.testing.assert_allclose(corr.sum(1), np.asarray(pm["map_b"]).reshape(3, 16), atol=1e-5)
    np.testing.assert_allclose(out["map_a"], pm["map_a"], atol=1e-6)
    np.testing.assert_allclose(out["score"], pm["score"], atol=1e-6)
    # Nothing is left off the patches of a mean-pooled model without a kept class token.
    for key in ("rest_a", "rest_b", "rest"):
        np.testing.assert_allclose(out[key], 0.0, atol=1e-6)
    # And the scores are not trivial: the three pairs differ.
    assert np.ptp(np.asarray(pm["score"])) > 0.05


def test_authors_convention_is_exact_with_the_rest_and_no_patch_matrix_can_be(paper_model):
    model, variables, xa, xb, fa, fb = paper_model
    out = ex.correspondence(fa, fb, aligned=True, convention="authors")
    pm = ex.paired_maps(model, variables, xa, xb, convention="authors", upsampled=False)
    corr = np.asarray(out["corr"])
    map_a, map_b = np.asarray(pm["map_a"]).reshape(3, 16), np.asarray(pm["map_b"]).reshape(3, 16)
    np.testing.assert_allclose(corr.sum(2) + out["rest_a"], map_a, atol=1e-5)
    np.testing.assert_allclose(corr.sum(1) + out["rest_b"], map_b, atol=1e-5)
    total = corr.sum((1, 2)) + out["rest_a"].sum(1) + out["rest_b"].sum(1) + out["rest"]
    np.testing.assert_allclose(total, pm["score"], atol=1e-5)
    # C alone does not have the authors' maps as marginals ...
    assert np.abs(corr.sum(2) - map_a).max() > 1e-3
    # ... and no matrix can: the two maps of a pair have different totals.
    assert np.abs(map_a.sum(1) - map_b.sum(1)).max() > 1e-4


def test_kept_class_token_share_goes_to_the_rest():
    model, variables = _model(**KEPT_CLS)
    xa, xb = _images(2, 3), _images(2, 4)
    fa, fb = ex.features(model, variables, xa), ex.features(model, variables, xb)
    out = ex.correspondence(fa, fb, aligned=True)
    pm = ex.paired_maps(model, variables, xa, xb, convention="transpose", upsampled=False)
    corr = np.asarray(out["corr"])
    np.testing.assert_allclose(corr.sum(2) + out["rest_a"], pm["map_a"].reshape(2, 16), atol=1e-5)
    np.testing.assert_allclose(corr.sum(1) + out["rest_b"], pm["map_b"].reshape(2, 16), atol=1e-5)
    total = corr.sum((1, 2)) + out["rest_a"].sum(1) + out["rest_b"].sum(1) + out["rest"]
    np.testing.assert_allclose(total, pm["score"], atol=1e-5)
    assert np.abs(out["rest_a"]).max() > 1e-3  # the class token's share is not on the patches


# --- the formula against numpy --------------------------------------------------------------


@pytest.mark.parametrize("convention", ["transpose", "authors"])
def test_patch_level_is_m_a_p_m_b_transposed(paper_model, convention):
    model, variables, xa, xb, _, _ = paper_model
    fq = ex.features(model, variables, xa)  # all heads kept: fused in the rollout
    fg = ex.features(model, variables, xb[:2])
    out = ex.correspondence(fq, fg, convention=convention)
    assert out["corr"].shape == (3, 2, 16, 16) and out["map_b"].shape == (3, 2, 4, 4)
    tok_a, r_a = _numpy_parts(model, variables, xa, 0)
    tok_b, r_b = _numpy_parts(model, variables, xb[:2], 0)
    for q in range(3):
        for g in range(2):
            p = _numpy_p(tok_a[q], tok_b[g])
            m_a = r_a[q] if convention == "authors" else r_a[q].T
            m_b = r_b[g] if convention == "authors" else r_b[g].T
            want = m_a @ p @ m_b.T
            np.testing.assert_allclose(out["corr"][q, g], want, rtol=1e-4, atol=1e-7)


def test_token_level_is_p_and_its_marginals_are_gamma(paper_model):
    model, variables, xa, xb, fa, fb = paper_model
    out = ex.correspondence(fa, fb, level="token")
    gamma_a, gamma_b, score = ex.token_similarity(fa.tokens[:, None], fb.tokens[None])
    np.testing.assert_allclose(out["corr"].sum(-1), gamma_a, atol=1e-6)
    np.testing.assert_allclose(out["corr"].sum(-2), gamma_b, atol=1e-6)
    np.testing.assert_allclose(out["score"], score, atol=1e-6)
    tok_a, _ = _numpy_parts(model, variables, xa, 0)
    tok_b, _ = _numpy_parts(model, variables, xb, 0)
    want = _numpy_p(tok_a[1], tok_b[2])
    np.testing.assert_allclose(out["corr"][1, 2], want, rtol=1e-4, atol=1e-7)
    # Rollout changes the matrix (the patch level is not P).
    patch = ex.correspondence(fa, fb)["corr"]
    assert np.abs(np.asarray(patch) - np.asarray(out["corr"])).max() > 1e-4


def test_models_without_attention_have_c_equal_p():
    from tests.test_explain import _TinyCNN

    model = _TinyCNN()
    x = _images(3, 5, size=8)
    variables = model.init(jax.random.PRNGKey(0), x)
    f = ex.features(model, variables, x)
    c = ex.correspondence(f, f)
    p = ex.correspondence(f, f, level="token")
    np.testing.assert_allclose(c["corr"], p["corr"], atol=1e-7)
    np.testing.assert_allclose(c["corr"].sum((-2, -1)), c["score"], atol=1e-5)
    np.testing.assert_allclose(np.diagonal(c["score"]), 1.0, atol=1e-5)


# --- batches: block, aligned, jit, vmap -------------------------------------------------------


def test_block_aligned_jit_and_vmap_agree(paper_model):
    _, _, _, _, fa, fb = paper_model
    block = ex.correspondence(fa, fb)
    assert block["corr"].shape == (3, 3, 16, 16) and block["score"].shape == (3, 3)
    aligned = ex.correspondence(fa, fb, aligned=True)
    for key in block:
        for k in range(3):
            np.testing.assert_allclose(block[key][k, k], aligned[key][k], atol=1e-7)
    jitted = jax.jit(lambda a, b: ex.correspondence(a, b))(fa, fb)
    for key in block:
        np.testing.assert_allclose(jitted[key], block[key], atol=1e-7)
    wa, wb = ex.fold(fa, convention="transpose"), ex.fold(fb, convention="transpose")
    mapped = jax.vmap(ex.pair_correspondence)(wa.w, wa.unit, wb.w, wb.unit)
    np.testing.assert_allclose(mapped["corr"], aligned["corr"], atol=1e-7)
    np.testing.assert_allclose(mapped["map_a"].reshape(3, 4, 4), aligned["map_a"], atol=1e-7)
    # Folded input is used as it is (its own convention), with no new forward.
    np.testing.assert_allclose(ex.correspondence(wa, wb)["corr"], block["corr"], atol=1e-7)
    # One pair by hand.
    one = ex.pair_correspondence(wa.w[2], wa.unit[2], wb.w[0], wb.unit[0])
    np.testing.assert_allclose(one["corr"], block["corr"][2, 0], atol=1e-7)
    np.testing.assert_allclose(one["score"], block["score"][2, 0], atol=1e-7)


def test_errors_are_clear(paper_model):
    _, _, _, _, fa, fb = paper_model
    with pytest.raises(ValueError, match="level must be one of"):
        ex.correspondence(fa, fb, level="pixel")
    with pytest.raises(ValueError, match="level='token' needs the Features"):
        ex.correspondence(ex.fold(fa), fb, level="token")
    with pytest.raises(ValueError, match="as many images in features_a as in features_b, got 3"):
        ex.correspondence(fa, fb.slice(0, 2), aligned=True)
    with pytest.raises(ValueError, match="convention must be one of"):
        ex.correspondence(fa, fb, convention="rows")
    folded = ex.fold(fb)
    narrow = ex.Folded(w=folded.w[..., :4], unit=folded.unit[..., :4], grid=folded.grid)
    with pytest.raises(ValueError, match="different sizes: 8 vs 4"):
        ex.correspondence(fa, narrow)
    with pytest.raises(ValueError, match="must be the Features"):
        ex.correspondence(np.zeros((3, 16, 8)), fb)


# --- a hand-made case: one patch pasted into two images --------------------------------------


def _local_attention_model(size):
    """A random ViT whose attention stays on each token (one head, q = k = an orthogonal
    map of the LayerNorm-ed token, so <q_i, k_i> = |q_i|^2 beats every <q_i, k_j>): its
    rollout is near the identity, the regime where C can resolve single patches."""
    kw = decode_variant("Tiny/4") | {"num_heads": 1}
    model = ViT(**kw, class_token=True, keep_class_token=False)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    flat = traverse_util.flatten_dict(variables["params"])
    width = kw["width"]
    q = np.linalg.qr(np.random.default_rng(5).normal(size=(width, width)))[0] * 2.0
    for k in list(flat):
        if len(k) >= 2 and k[-2] in ("query", "key"):
            flat[k] = jnp.asarray(q.reshape(width, 1, width)) if k[-1] == "kernel" else 0 * flat[k]
    return model, {"params": traverse_util.unflatten_dict(flat)}


def test_a_pasted_patch_is_the_peak_of_c_and_p():
    size, p = 32, 4
    model, variables = _local_attention_model(size)
    rng = np.random.default_rng(0)
    grid = size // p
    for _ in range(6):
        a = rng.normal(size=(size, size, 3)).astype(np.float32) * 0.5
        b = rng.normal(size=(size, size, 3)).astype(np.float32) * 0.5
        patch = rng.normal(size=(p, p, 3)).astype(np.float32) * 3
        (ra, ca), (rb, cb) = rng.integers(0, grid, 2), rng.integers(0, grid, 2)
        a[ra * p : (ra + 1) * p, ca * p : (ca + 1) * p] = patch
        b[rb * p : (rb + 1) * p, cb * p : (cb + 1) * p] = patch
        f = ex.features(model, variables, jnp.stack([a, b]), head_fusion="mean")
        assert float(jnp.diagonal(f.attention, axis1=-2, axis2=-1).min()) > 0.8  # local
        for level in ("patch", "token"):
            out = ex.correspondence(f.slice(0, 1), f.slice(1, 2), level=level)
            corr = np.asarray(out["corr"][0, 0])
            i, j = np.unravel_index(corr.argmax(), corr.shape)
            assert (i, j) == (ra * grid + ca, rb * grid + cb), level
            # The peak patch of A's row is B's pasted patch, and the other way round.
            assert corr[i].argmax() == j and corr[:, j].argmax() == i
