"""Second-order explanations (``explain.methods.bilrp``): C = W_a W_b^T through the whole network.

Checked against independent paths: W against the Jacobian of the detached model (``jax.jacrev``,
not the method's batched VJPs), the bias terms against ``jax.grad`` over the parameters, the
marginals against the ``conservative`` method through the one door. Tolerances: float32
rounding of sums of O(N E) terms (``_tol``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax import explain
from pairviz_jax.explain.methods import bilrp
from pairviz_jax.models import Probe, ViT, decode_variant

EPS = float(np.finfo(np.float32).eps)
IMAGE = (16, 16)  # 4 x 4 patches of the Tiny/4 models

# A DINOv2-like model (class token pooling, a register, layer scales) and the paper's (gap).
CONFIGS = {
    "dinov2": dict(class_token=True, pool_type="tok", num_registers=1, layer_scale=0.5),
    "gap": dict(proj_dim=6),
}


@functools.cache
def _setup(name: str, n: int = 2, zero_bias: bool = False):
    model = ViT(**decode_variant("Tiny/4"), **CONFIGS[name])
    x = jax.random.normal(jax.random.PRNGKey(3), (n, *IMAGE, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    flat = traverse_util.flatten_dict(variables["params"])
    keys = jax.random.split(jax.random.PRNGKey(5), len(flat))
    flat = {  # biases and scales away from their initial zeros and ones
        k: (jnp.zeros_like(v) if zero_bias and k[-1] == "bias" else
            v + 0.1 * jax.random.normal(key, v.shape))
        for key, (k, v) in zip(keys, sorted(flat.items()), strict=True)
    }  # fmt: skip
    return model, {"params": traverse_util.unflatten_dict(flat)}, x


def _tol(*arrays) -> float:
    """float32 rounding of a sum of products: a few eps times the sum of |terms|."""
    return 64 * EPS * max(1.0, *(float(np.abs(np.asarray(a)).sum()) for a in arrays))


def _reference_w(model, variables, x):
    """W [B, N', E] of every token (prefix included) by jacrev of the detached model."""
    out0 = model.apply(variables, x)[1]
    tokens = out0["block_inputs"][0]

    def emb(delta):
        probe = Probe(detach=True, block_deltas={0: delta})
        return model.apply(variables, x, probe=probe)[0]

    jac = jax.jit(jax.jacrev(emb))(jnp.zeros_like(tokens))  # [B, E, B, N', D]
    b = x.shape[0]
    jac = jac[jnp.arange(b), :, jnp.arange(b)]  # [B, E, N', D]
    e = model.apply(variables, x)[0]
    w = jnp.einsum("bmnd,bnd->bnm", jac, tokens) / jnp.linalg.norm(e, axis=-1)[:, None, None]
    return np.asarray(w), np.asarray(e)


def test_fold_is_the_detached_jacobian_times_the_tokens():
    model, variables, x = _setup("dinov2")
    parts = bilrp.fold_parts(explain.Inputs(model, variables, x))
    ref, emb = _reference_w(model, variables, x)
    n = parts["w"].shape[1]
    assert parts["w"].shape == (x.shape[0], 16, model.embedding_dim) and n == 16
    assert parts["w"].dtype == jnp.float32
    np.testing.assert_allclose(parts["w"], ref[:, -n:], atol=_tol(ref) / ref.size * 16, rtol=1e-4)
    # total = every token's relevance (prefix included); unit - total: the biases' share.
    np.testing.assert_allclose(parts["total"], ref.sum(1), atol=_tol(ref[0]), rtol=1e-4)
    u = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    np.testing.assert_allclose(parts["unit"], u, atol=4 * EPS)
    np.testing.assert_allclose(parts["rest"], u - parts["w"].sum(1), atol=_tol(ref[0]))


def _bias_share(model, variables, x):
    """sum over every bias b of b . d(beta_m / |beta|)/db (detached), [E]: the jax.grad path."""
    e = model.apply(variables, x)[0]
    norm = jax.lax.stop_gradient(jnp.linalg.norm(e, axis=-1))

    def f(params, c):
        emb = model.apply({"params": params}, x, probe=Probe(detach=True))[0]
        return (emb @ c / norm).sum()

    eye = jnp.eye(e.shape[-1], dtype=jnp.float32)
    g = jax.jit(jax.vmap(jax.grad(f), in_axes=(None, 0)))(variables["params"], eye)
    g, p = traverse_util.flatten_dict(g), traverse_util.flatten_dict(variables["params"])
    # every bias above the patch embedding (block 0's input holds the tokens fixed)
    keys = [k for k in p if k[-1] == "bias" and k[0] != "embedding"]
    return np.asarray(sum(jnp.einsum("m...,...->m", g[k], p[k]) for k in keys))


def test_rest_terms_are_the_prefix_tokens_and_the_stated_bias_terms():
    model, variables, x = _setup("dinov2")
    parts = bilrp.fold_parts(explain.Inputs(model, variables, x))
    bias = _bias_share(model, variables, x)  # [E], summed over the one image
    # unit = every token's relevance + the biases' share (Euler on the detached model)
    got = (parts["unit"] - parts["total"]).sum(0)  # summed over the images, as ``bias``
    np.testing.assert_allclose(got, bias, atol=_tol(parts["w"]) / 8)
    assert np.abs(bias).max() > 1e-3  # the biases' share is real, not rounding


def test_c_sums_to_the_cosine_and_its_marginals_are_the_conservative_maps():
    model, variables, x = _setup("dinov2")
    inp = explain.Inputs(model, variables, x)
    out = explain.correspondence(inp, inp, method="bilrp")
    b, n = x.shape[0], 16
    assert out["corr"].shape == (b, b, n, n) and out["corr"].dtype == jnp.float32
    whole = out["corr"].sum((-2, -1)) + out["rest_a"].sum(-1) + out["rest_b"].sum(-1)
    np.testing.assert_allclose(whole + out["rest"], out["score"], atol=_tol(out["corr"][0, 0]))
    emb = explain.embed(model, variables, x)
    np.testing.assert_allclose(out["score"], explain.cosine(emb[:, None], emb[None]), atol=1e-6)
    # marginals: C's row sums plus rest_a are a's conservative map against b (the one door)
    cross = explain.cross_maps(inp, inp, method="conservative")
    rows = (out["corr"].sum(-1) + out["rest_a"]).reshape(b, b, 4, 4)
    tol = _tol(out["corr"][0, 0])
    np.testing.assert_allclose(rows, cross["maps_q"], atol=tol)
    np.testing.assert_allclose(out["map_a"], cross["maps_q"], atol=tol)
    np.testing.assert_allclose(out["map_b"], cross["maps_g"], atol=tol)
    cols = (out["corr"].sum(-2) + out["rest_b"]).reshape(b, b, 4, 4)
    np.testing.assert_allclose(cols, cross["maps_g"], atol=tol)
    paired = explain.paired_maps(model, variables, x, x[::-1], method="conservative")
    diag = out["map_a"][np.arange(b), np.arange(b)[::-1]]
    np.testing.assert_allclose(diag, paired["map_a"], atol=tol)
    # cross_maps(method="bilrp") folds once per image and gives the same maps
    folded = explain.cross_maps(inp, inp, method="bilrp")
    np.testing.assert_allclose(folded["maps_q"], cross["maps_q"], atol=tol)
    np.testing.assert_allclose(folded["rest_q"], cross["rest_q"], atol=tol)


def test_without_biases_or_prefix_tokens_c_alone_is_the_cosine():
    model, variables, x = _setup("gap", zero_bias=True)  # the paper's pooling
    inp = explain.Inputs(model, variables, x)
    out = explain.correspondence(inp, inp, method="bilrp", aligned=True)
    maps = explain.cross_maps(inp, inp, method="conservative")["maps_q"]
    np.testing.assert_allclose(
        out["corr"].sum(-1).reshape(2, 4, 4),
        maps[np.arange(2), np.arange(2)],
        atol=_tol(out["corr"][0]),
    )
    np.testing.assert_allclose(out["corr"].sum((-2, -1)), out["score"], atol=_tol(out["corr"][0]))
    np.testing.assert_allclose(out["rest_a"], 0, atol=_tol(out["corr"][0]) / 16)


def test_low_rank_is_exact_at_full_rank_and_its_error_falls_with_k():
    model, variables, x = _setup("dinov2")
    inp = explain.Inputs(model, variables, x)
    exact = np.asarray(explain.correspondence(inp, inp, method="bilrp", aligned=True)["corr"])
    e = model.embedding_dim
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(e, e)))[0].astype(np.float32)
    full = bilrp.fold(inp, basis=rot)
    got = np.asarray(explain.correspondence(full, full, method="bilrp", aligned=True)["corr"])
    np.testing.assert_allclose(got, exact, atol=_tol(exact[0]) / 16)
    emb = explain.embed(model, variables, x)
    errors = []
    for k in (1, 2, 8, e):
        f = bilrp.fold(inp, basis=bilrp.top_directions(emb, k))
        c = np.asarray(explain.correspondence(f, f, method="bilrp", aligned=True)["corr"])
        assert f.w.shape == (2, 16, k) and f.unit.shape == (2, k)
        errors.append(np.linalg.norm(c - exact) / np.linalg.norm(exact))
    assert errors[-1] < 1e-5 and errors[0] > 10 * errors[-1]
    assert errors == sorted(errors, reverse=True)
    # U spanning the images' own unit embeddings (k = 2 images): the marginals are exact
    f3 = bilrp.fold(inp, basis=bilrp.top_directions(emb, 2))
    ex = explain.correspondence(inp, inp, method="bilrp")
    lo = explain.correspondence(f3, f3, method="bilrp")
    np.testing.assert_allclose(lo["map_a"], ex["map_a"], atol=_tol(exact[0]) / 4)
    np.testing.assert_allclose(lo["score"], ex["score"], atol=1e-5)


def test_fold_under_jit_and_vmap():
    model, variables, x = _setup("dinov2")

    def w_of(v, images):
        f = bilrp.fold(explain.Inputs(model, v, images))
        return f.w, f.unit

    eager = bilrp.fold(explain.Inputs(model, variables, x))
    w, u = jax.jit(w_of)(variables, x)
    assert w.shape == (2, 16, model.embedding_dim) and w.dtype == jnp.float32
    np.testing.assert_allclose(w, eager.w, atol=1e-6)
    wv, uv = jax.vmap(w_of, in_axes=(None, 0))(variables, x[:, None])
    assert wv.shape == (2, 1, 16, model.embedding_dim) and uv.shape == (2, 1, model.embedding_dim)
    np.testing.assert_allclose(wv[:, 0], eager.w, atol=1e-6)
    one = jax.vmap(explain.pair_correspondence)(
        eager.w, eager.unit, eager.w[::-1], eager.unit[::-1]
    )
    assert one["corr"].shape == (2, 16, 16)


def test_bad_requests_say_what_was_expected():
    model, variables, x = _setup("dinov2")
    inp = explain.Inputs(model, variables, x)
    with pytest.raises(ValueError, match="does not fold per image"):
        explain.correspondence(inp, inp, method="chefer")
    with pytest.raises(ValueError, match="level='token' is the paper's"):
        explain.correspondence(inp, inp, method="bilrp", level="token")
    with pytest.raises(ValueError, match="takes no option"):
        explain.correspondence(inp, inp, method="bilrp", steps=3)
    with pytest.raises(ValueError, match="layer=9"):
        explain.correspondence(inp, inp, method="bilrp", layer=9)
    with pytest.raises(ValueError, match=r"basis must be \[E, k\]"):
        bilrp.fold(inp, basis=np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="takes explain.Inputs"):
        explain.correspondence(x, x, method="bilrp")
    assert "bilrp" in explain.METHODS
