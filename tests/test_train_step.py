"""The train step: 8 devices equal 1, accumulation, donation, no retracing, the optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pairviz_jax.train import input as input_lib
from pairviz_jax.train import loop, sharding
from pairviz_jax.train.config import base_config, override
from pairviz_jax.train.state import make_optimizer


def tiny_config(loss="arcface", **overrides):
    c = base_config()
    c.model.variant = "mu/4"
    c.model.proj_dim = 8
    c.input.image_size = 16
    c.batch_size = 16
    c.eval.batch_size = 16
    c.total_steps = 10
    c.optim.lr = 0.05
    c.loss.name = loss
    c.loss.scale = 16.0
    c.loss.head_lr_mult = 10.0
    return override(c, **overrides)


def _batches(config, n):
    it = input_lib.train_iterator(
        config, local_batch=config.batch_size, process_index=0, process_count=1
    )
    return [next(it) for _ in range(n)]


def _train(config, devices, batches):
    mesh = sharding.make_mesh(devices)
    run = loop.build(config, mesh)
    state, out = run.state, []
    fresh = jax.device_get(state.params)
    for b in batches:
        state, m = run.step_fn(state, sharding.global_batch(b, mesh), run.step_rng)
        out.append(jax.device_get(m))
    return jax.device_get(state.params), out, fresh


def test_eight_devices_equal_one():
    # Proxy Anchor couples the whole batch (its normalisation counts the proxies present in
    # it): the sharded step must compute the global-batch loss, not per-device ones.
    assert jax.device_count() == 8
    config = tiny_config("proxy_anchor", **{"model.dropout": 0.1})
    batches = _batches(config, 3)
    p1, m1, fresh = _train(config, jax.devices()[:1], batches)
    p8, m8, _ = _train(config, jax.devices(), batches)
    for a, b in zip(m1, m8, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
    # The parameters moved, and moved the same way.
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, fresh)
    assert max(jax.tree.leaves(moved)) > 1e-3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), p1, p8)


def test_accumulation_equals_full_batch_for_arcface():
    config = tiny_config("arcface")
    batches = _batches(config, 2)
    p_full, m_full, _ = _train(config, jax.devices(), batches)
    config.optim.grad_accum_steps = 4
    p_acc, m_acc, _ = _train(config, jax.devices(), batches)
    # ArcFace is a mean over examples: 4 equal micro-batches give the same gradient.
    np.testing.assert_allclose(m_full[-1]["loss"], m_acc[-1]["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), p_full, p_acc)


def test_step_donates_state_compiles_once_and_is_pure():
    config = tiny_config(**{"model.dropout": 0.2})
    mesh = sharding.make_mesh()
    run = loop.build(config, mesh)
    batches = [sharding.global_batch(b, mesh) for b in _batches(config, 3)]
    copy = jax.tree.map(jnp.copy, run.state)
    state = run.state
    leaf = jax.tree.leaves(state.params)[0]
    for b in batches:
        state, m = run.step_fn(state, b, run.step_rng)
    assert leaf.is_deleted()  # donated
    assert run.step_fn._cache_size() == 1  # no retracing across steps
    assert int(state.step) == 3
    assert all(np.isfinite(float(v)) for v in m.values())
    # A pure function of (state, batch, rng): the same inputs give the same outputs.
    again, m_again = run.step_fn(jax.tree.map(jnp.copy, copy), batches[0], run.step_rng)
    first, m_first = run.step_fn(copy, batches[0], run.step_rng)
    assert float(m_again["loss"]) == float(m_first["loss"])
    jax.tree.map(np.testing.assert_array_equal, again.params, first.params)


def test_optimizer_groups_one_cycle_and_decay():
    config = tiny_config(**{"loss.head_lr_mult": 100.0, "optim.grad_clip_norm": 0.0})
    config.optim.momentum = 0.0
    config.optim.weight_decay = 0.0
    tx = make_optimizer(config)
    params = {"model": {"w": jnp.ones((2, 2))}, "head": {"weights": jnp.ones((3, 2))}}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    lr0 = config.optim.lr / config.optim.div_factor  # 1-cycle starts at peak / div_factor
    np.testing.assert_allclose(updates["model"]["w"], -lr0, rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["weights"], -100 * lr0, rtol=1e-6)
    # Peak at pct_start of the steps.
    sched = optax.cosine_onecycle_schedule(10, config.optim.lr, config.optim.pct_start)
    assert float(sched(3)) == pytest.approx(config.optim.lr)
    # Weight decay applies to kernels (ndim > 1), not to biases.
    config.optim.weight_decay = 0.5
    tx = make_optimizer(config)
    params = {
        "model": {"k": jnp.ones((2, 2)), "b": jnp.ones((2,))},
        "head": {"weights": jnp.ones((3, 2))},
    }
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["model"]["k"], -lr0 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["model"]["b"], 0.0)
    np.testing.assert_allclose(updates["head"]["weights"], 0.0)  # head_weight_decay = 0
