"""XLA:CPU's YNNPACK reduce fusions miscompiled batched maps (issue 19, item 0).

With jaxlib 0.10.2 and DINOv2-S/14 shapes (224 px: 257 tokens of width 384), a batch of
2 images x 8 partners (4112 token rows in one backward pass) gave wrong maps for every
partner but the first: gradient x input off by up to 100x, chefer by a few per cent.
``pairviz_jax._xla`` turns those fusions off when pairviz_jax is imported; these tests
fail without it (``PAIRVIZ_KEEP_XLA_FLAGS=1``, in a fresh process).

The model is DINOv2-S/14 cut to 2 blocks (the bug needs only the shapes; gradient x input
at block 0 needs a second block, since a lone block's LayerNorm makes the patch tokens'
gradient x input vanish), random weights.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import pairviz_jax
from pairviz_jax import _xla, explain
from pairviz_jax.models import ViT, decode_variant

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES, PARTNERS = 2, 8  # x 257 tokens = 4112 rows per backward pass: the bug's size


@pytest.fixture(scope="module")
def dinov2_cut():
    model = ViT(
        **{**decode_variant("S/14"), "depth": 2},
        class_token=True,
        layer_scale=1.0,
        pool_type="tok",
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (IMAGES, 224, 224, 3))
    partners = jax.random.normal(jax.random.PRNGKey(1), (IMAGES, PARTNERS, 384))

    @jax.jit
    def init(x):  # every parameter moved off its initial value (no zero biases)
        variables = model.init(jax.random.PRNGKey(2), x)
        leaves, tree = jax.tree_util.tree_flatten(variables)
        keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
        leaves = [
            a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)
        ]
        return jax.tree_util.tree_unflatten(tree, leaves)

    variables = init(x[:1])
    return model, variables, x, partners


def _maps(model, variables, images, partners, method, chunk):
    """Maps [B, K, gh, gw] of B images against K partners each, ``chunk`` partners per pass."""
    out = explain.against(model, variables, images, partners, method=method, chunk=chunk)
    return np.asarray(out["maps"], np.float64)


@pytest.mark.parametrize("method", ["gradxinput", "chefer"])
def test_batched_maps_equal_one_partner_at_a_time(dinov2_cut, method):
    model, variables, images, partners = dinov2_cut
    batched = _maps(model, variables, images, partners, method, chunk=PARTNERS)
    single = _maps(model, variables, images, partners, method, chunk=1)
    scale = np.abs(single).max((-2, -1))
    assert (scale > 0).all()
    # float32 through two blocks: measured <= 1e-5 of the map's largest entry; the
    # miscompiled maps were off by 3e-2 (chefer) to 1e2 (gradxinput) of it.
    err = np.abs(batched - single).max((-2, -1)) / scale
    assert err.max() < 1e-4, f"maps wrong for (image, partner) {np.argwhere(err >= 1e-4).tolist()}"


# --------------------------------------------------------------------------- the flag


def test_apply_appends_and_respects_the_user():
    v = (0, 10)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert _xla.apply(env, v, started=False) == "applied"
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {_xla.SETTING}"
    env = {}
    with pytest.warns(RuntimeWarning, match="after JAX's backend started"):
        assert _xla.apply(env, v, started=True) == "late"
    assert env["XLA_FLAGS"] == _xla.SETTING  # still set, for subprocesses
    for flags in (f"{_xla.FLAG}=", f"--a=1 {_xla.FLAG}=reduce"):
        env = {"XLA_FLAGS": flags}
        assert _xla.apply(env, v, started=False) == "user" and env["XLA_FLAGS"] == flags
    env = {_xla.KEEP: "1"}
    assert _xla.apply(env, v, started=False) == "kept" and "XLA_FLAGS" not in env
    for other in ((0, 9), (0, 11), (1, 0)):  # the flag may not exist there: never guessed
        env = {}
        assert _xla.apply(env, other, started=False) == "unaffected" and env == {}


def test_this_process_has_the_flag():
    """Imported before the backend started (conftest), so the backend read the flag: set here
    ("applied"), or inherited from the process that started this one ("user": pytest-xdist's
    workers inherit the controller's environment, where conftest already set it)."""
    assert pairviz_jax._xla.STATUS in ("applied", "user")
    assert _xla.SETTING in os.environ["XLA_FLAGS"].split()


def _run(code, **env):
    full = dict(os.environ, PYTHONPATH=REPO, **env)
    full.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_fresh_process_gets_the_flag_and_a_late_import_warns():
    # The pure-JAX reproduction is right once pairviz_jax is imported first (a CLI, a
    # batch worker, a user's script: they all import pairviz_jax before computing).
    r = _run(
        "import sys, pairviz_jax; sys.path.insert(0, 'tools'); import xla_ynn_repro as m; "
        "sys.exit(m.main())"
    )
    assert r.returncode == 0 and "right" in r.stdout, r.stdout + r.stderr
    r = _run("import jax; jax.devices(); import pairviz_jax; print(pairviz_jax._xla.STATUS)")
    assert r.returncode == 0 and r.stdout.split() == ["late"], r.stdout + r.stderr
    assert "imported after JAX's backend started" in r.stderr
