"""ArcFace and Proxy Anchor against numpy references and hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax.losses import arcface_logits, arcface_loss, l2_normalize, proxy_anchor_loss


def _np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_arcface(x, y, w, s, m, fallback=True):
    """Deng et al. eq. 3 with explicit angles (arccos), one example at a time; with
    ``fallback`` the authors' code's ``cos(theta) - m sin(m)`` where ``theta + m > pi``."""
    cos = _np_normalize(x.astype(np.float64)) @ _np_normalize(w.astype(np.float64)).T
    losses = []
    for i in range(len(x)):
        logits = s * cos[i].copy()
        theta = np.arccos(np.clip(cos[i, y[i]], -1, 1))
        if fallback and theta + m > np.pi:
            logits[y[i]] = s * (np.cos(theta) - m * np.sin(m))
        else:
            logits[y[i]] = s * np.cos(theta + m)
        mx = logits.max()
        lse = mx + np.log(np.sum(np.exp(logits - mx)))
        losses.append(lse - logits[y[i]])
    return float(np.mean(losses))


def np_proxy_anchor(x, y, p, alpha, delta):
    """Kim et al. eq. 4 with explicit loops over proxies."""
    cos = _np_normalize(x.astype(np.float64)) @ _np_normalize(p.astype(np.float64)).T
    num_classes = len(p)
    pos_terms, neg_terms = [], []
    for c in range(num_classes):
        pos = [i for i in range(len(x)) if y[i] == c]
        neg = [i for i in range(len(x)) if y[i] != c]
        if pos:
            pos_terms.append(np.log1p(sum(np.exp(-alpha * (cos[i, c] - delta)) for i in pos)))
        neg_terms.append(np.log1p(sum(np.exp(alpha * (cos[i, c] + delta)) for i in neg)))
    return float(sum(pos_terms) / len(pos_terms) + sum(neg_terms) / num_classes)


@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize("s,m", [(64.0, 0.5), (30.0, 1.2), (1.0, 0.0)])
def test_arcface_matches_numpy_reference(s, m, fallback):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)  # 3-d: some angles are past pi - m
    w = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=12)
    want = np_arcface(x, y, w, s, m, fallback)
    got = float(arcface_loss(x, y, w, scale=s, margin=m, fallback=fallback))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if m == 1.2:  # the case is not vacuous: the two forms differ here
        assert not np.isclose(np_arcface(x, y, w, s, m, True), np_arcface(x, y, w, s, m, False))


def test_arcface_fallback_removes_the_antipodal_optimum():
    # Embedding opposite to every class (theta = pi for all): eq. 3 verbatim rewards it,
    # the target logit -cos(m) beating the others' -1; the fallback keeps it penalised.
    w = np.eye(3, dtype=np.float32)
    x_anti = np.array([[-1.0, 0.0, 0.0]], np.float32)  # exactly opposite to class 0
    s, m = 16.0, 0.1
    verbatim = float(arcface_loss(x_anti, np.array([0]), w, s, m, fallback=False))
    # Logits: target s cos(pi + m) = -s cos(m); the others s cos(pi / 2) = 0.
    np.testing.assert_allclose(verbatim, np.log1p(2 * np.exp(s * np.cos(m))), rtol=1e-5)
    fixed = float(arcface_loss(x_anti, np.array([0]), w, s, m))
    np.testing.assert_allclose(fixed, np.log1p(2 * np.exp(s * (1 + m * np.sin(m)))), rtol=1e-5)
    # With the fallback, the target logit decreases monotonically in theta over [0, pi].
    theta = np.linspace(0, np.pi, 181)
    xs = np.stack([np.cos(theta), np.sin(theta), 0 * theta], 1).astype(np.float32)
    logits = arcface_logits(xs, np.zeros(181, int), w, s, m)[:, 0]
    assert np.all(np.diff(np.asarray(logits)) <= 1e-5)


def test_arcface_hand_case():
    # x equals class 0's weight: theta_0 = 0, so the target logit is s cos(m); class 1 at 90 deg.
    x = np.array([[2.0, 0.0]], np.float32)
    w = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
    s, m = 2.0, 0.5
    want = np.log1p(np.exp(-s * np.cos(m)))  # -log(e^{s cos m} / (e^{s cos m} + e^0))
    got = float(arcface_loss(x, np.array([0]), w, scale=s, margin=m))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Margin 0, scale 1 is plain softmax cross-entropy on cosines.
    got0 = float(arcface_loss(x, np.array([1]), w, scale=1.0, margin=0.0))
    np.testing.assert_allclose(got0, np.log1p(np.exp(1.0)), rtol=1e-6)


def test_arcface_margin_penalises_the_true_class():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4))
    w = rng.normal(size=(3, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    assert float(arcface_loss(x, y, w, margin=0.3)) > float(arcface_loss(x, y, w, margin=0.0))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_arcface_finite_gradients_at_cos_plus_minus_one(sign):
    w = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = sign * w[:1]  # cos = +-1 exactly with class 0
    g = jax.grad(lambda x, w: arcface_loss(x, jnp.array([0]), w), argnums=(0, 1))(x, w)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in g)
    # And for a zero embedding.
    g0 = jax.grad(lambda x: arcface_loss(x, jnp.array([0]), w))(jnp.zeros((1, 3)))
    assert bool(jnp.all(jnp.isfinite(g0)))


def test_arcface_weights_mask_examples():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    mask = np.array([1, 1, 1, 0, 0], np.float32)
    got = float(arcface_loss(x, y, w, weights=mask))
    np.testing.assert_allclose(got, float(arcface_loss(x[:3], y[:3], w)), rtol=1e-6)


@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (8.0, 0.0), (64.0, 0.3)])
def test_proxy_anchor_matches_numpy_reference(alpha, delta):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    p = rng.normal(size=(7, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=10)  # proxies 4..6 have no positives in the batch
    got = float(proxy_anchor_loss(x, y, p, alpha=alpha, delta=delta))
    np.testing.assert_allclose(got, np_proxy_anchor(x, y, p, alpha, delta), rtol=1e-5)


def test_proxy_anchor_hand_case():
    # Two embeddings on their own proxies, a third proxy with no positives.
    x = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
    p = np.eye(3, dtype=np.float32)
    a, d = 32.0, 0.1
    pos = np.log1p(np.exp(-a * (1 - d)))  # each of the two positive proxies, cos = 1
    neg = np.log1p(np.exp(a * d))  # proxies 0 and 1: one negative each, cos = 0
    neg_empty = np.log1p(2 * np.exp(a * d))  # proxy 2: both are negatives, cos = 0
    want = (2 * pos) / 2 + (2 * neg + neg_empty) / 3
    got = float(proxy_anchor_loss(x, np.array([0, 1]), p, alpha=a, delta=d))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_proxy_anchor_stable_and_finite_at_extremes():
    p = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    x = jnp.array([[-1.0, 0.0], [1.0, 0.0]])  # each embedding on the *other* proxy: cos = -1
    y = jnp.array([0, 1])
    loss, g = jax.value_and_grad(
        lambda x, p: proxy_anchor_loss(x, y, p, alpha=64.0, delta=0.5), argnums=(0, 1)
    )(x, p)
    # log(1 + e^{64 * 1.5}) ~ 96 per term, no overflow in float32.
    np.testing.assert_allclose(float(loss), 2 * 96.0, rtol=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in g)


def test_proxy_anchor_weights_drop_padding():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    p = rng.normal(size=(3, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 2, 1])
    mask = np.array([1, 1, 1, 1, 0, 0])
    got = float(proxy_anchor_loss(x, y, p, weights=mask))
    np.testing.assert_allclose(got, np_proxy_anchor(x[:4], y[:4], p, 32.0, 0.1), rtol=1e-5)


def test_l2_normalize_zero_is_finite():
    g = jax.grad(lambda v: l2_normalize(v).sum())(jnp.zeros((2, 3)))
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(jnp.ones((1, 4))), axis=-1), 1.0)
