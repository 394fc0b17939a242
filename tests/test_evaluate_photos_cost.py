"""What ``evaluate --photos`` costs: the forwards of the curves scale with the pairs asked, one
compiled forward serves every embedding of a chunk, and the methods figure reuses the maps the
evaluation compiled (counted on a tiny model; no clock)."""

import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from pairviz_jax import evaluate as ev
from pairviz_jax import explain
from pairviz_jax.evaluate import commands, kinds
from pairviz_jax.explain import api, maps
from pairviz_jax.models import ViT, decode_variant
from pairviz_jax.plotting import LoadedModel
from tests.test_evaluate_pairs import _synthetic_pairs
from tests.test_vit_families import _random_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loaded(proj_dim):
    """A tiny ViT of its own (its proj_dim is used by no other test, so the compiled functions
    counted here were compiled by this test only). No class token: rollout = rollout_mean."""
    model = ViT(**decode_variant("mu/4"), proj_dim=proj_dim)
    x = jnp.zeros((1, 32, 32, 3))
    return LoadedModel(model, _random_variables(model, x), (32, 32), None, None, f"tiny{proj_dim}")


def test_curves_pool_every_kind_into_one_compiled_forward(monkeypatch):
    loaded = _loaded(11)
    counted = []
    embed = explain.embed

    def counting(model, variables, images):
        counted.append(len(images))
        return embed(model, variables, images)

    monkeypatch.setattr(explain, "embed", counting)
    names = ("authors", "rollout", "rollout_mean", "random")
    steps, pairs = 8, 2
    res = ev.evaluate_photos(
        loaded,
        pairs,
        splits=("a",),
        kinds=names,
        steps=steps,
        make_pairs=_synthetic_pairs,
        log=None,
    )
    # One compiled shape of the forward for the embeddings and every curve.
    assert maps._embed_fn(loaded.model)._cache_size() == 1
    assert set(counted) == {8}
    # The curves cost what the size asks: 2 (S - 1) images per pair and kind, but
    # rollout_mean's images are rollout's (no class token: the same map), embedded once; the
    # partners, images and the mean baseline (one image) come first; the last batch padded.
    distinct = pairs * (len(names) - 1) * 2 * (steps - 1)
    assert sum(counted) <= math.ceil((pairs + pairs + 1 + distinct) / 8) * 8, counted
    # The shared images give rollout_mean exactly rollout's curves.
    for r in res.values():
        for mode in ("deletion", "insertion"):
            np.testing.assert_array_equal(r.curves["rollout_mean"][mode], r.curves["rollout"][mode])
        assert r.curves["authors"]["deletion"].shape == (pairs, steps + 1)


def test_pooled_curves_equal_each_kind_alone():
    """``curves_of_maps`` (every kind, one stream, duplicates once) against ``score_curves``
    of each kind on its own, with an embedding that is exact (the pixels themselves)."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    unit = rng.normal(size=(3, 16)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    m = {"x": rng.normal(size=(3, 2, 2)), "y": rng.normal(size=(3, 2, 2))}
    m["x_again"] = m["x"] * 2.0  # the same order: the same images
    base = np.full_like(a, 0.3)
    calls = []

    def embed(x):
        calls.append(len(x))
        return np.asarray(x).reshape(len(x), -1)

    def pooled(mm):
        calls.clear()
        got = ev.measures.curves_of_maps(
            embed, a, unit, mm, (2, 2), steps=4, baseline=base, batch_size=5
        )
        return got, list(calls)

    _, calls_two = pooled({k: m[k] for k in ("x", "y")})
    got, calls_three = pooled(m)
    assert set(calls_three) == {5}  # every batch padded to one shape
    # The ends (6 images), then at most 3 images x 2 kinds x 2 modes x 3 inner points; the
    # kind with x's order adds no forward.
    assert sum(calls_three) <= math.ceil(6 / 5) * 5 + math.ceil(3 * 2 * 2 * 3 / 5) * 5
    assert calls_three == calls_two
    for kind, mm in m.items():
        for mode in ("deletion", "insertion"):
            alone = ev.score_curves(embed, a, unit, mm, (2, 2), mode=mode, steps=4, baseline=base)
            np.testing.assert_allclose(got[kind][mode], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("distractor", [False, True])
def test_the_figure_reuses_the_maps_the_evaluation_compiled(distractor, monkeypatch, tmp_path):
    loaded = _loaded(14 if distractor else 13)
    monkeypatch.setattr(ev.photos, "photo_pairs", _synthetic_photo_pairs)
    monkeypatch.setattr("pairviz_jax.evaluate.figures.photo_pairs", _synthetic_photo_pairs)
    text, paths = commands.run(
        loaded,
        out=str(tmp_path / "e.png"),
        photos=True,
        pairs=3 if distractor else 2,
        steps=2,
        distractor=distractor,
        methods=["chefer", "paper"],
        figure=str(tmp_path / "methods.png"),
    )
    assert str(tmp_path / "methods.png") in paths and "| Chefer" in text
    # The evaluation's maps of 2 pairs against 1 partner (of 3 against 2 with a distractor),
    # and the figure's rows in calls of that same shape (three rows, a pair and a distractor
    # pair against each partner; or both pairs against 2 partners): chefer compiled for one
    # shape, the paper's maps and the baselines for one (their one group).
    m, opts = api._resolve("chefer", loaded.model, {})
    assert api._against_fn(m.name, opts, loaded.model)._cache_size() == 1
    group = ("authors", "transpose", "rollout", "rollout_mean", "gamma")
    assert kinds._feature_fn(loaded.model, group, "score")._cache_size() == 1
    shown = ("authors", "transpose", "rollout")  # the figure's own group, before
    assert kinds._feature_fn(loaded.model, shown, "score")._cache_size() == 0
    assert maps._embed_fn(loaded.model)._cache_size() == 1


def _synthetic_photo_pairs(indices, *, split, image_size, seed=0, distractor=False, **kw):
    """``photo_pairs`` without the photos extra: the synthetic squares, with uint8 copies."""
    indices = range(indices) if isinstance(indices, int) else indices
    d = _synthetic_pairs(
        indices,
        split=split,
        image_size=image_size,
        seed=seed,
        distractor=distractor,
        normalization=None,
    )
    to8 = lambda x: np.clip(x * 60 + 128, 0, 255).astype(np.uint8)  # noqa: E731
    return {**d, "uint8_images": to8(d["images"]), "uint8_partners": to8(d["partners"])}


def test_the_command_line_keeps_compiled_programs_on_disk(tmp_path):
    """``PAIRVIZ_XLA_CACHE`` names a folder that keeps what a run compiled (in a process of
    its own: the cache is for the whole process)."""
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PYTHONPATH=ROOT, PAIRVIZ_XLA_CACHE=str(cache))
    code = (
        "import jax, jax.numpy as jnp\n"
        "from pairviz_jax.evaluate import commands\n"
        "print(commands.use_compile_cache())\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "jax.jit(lambda x: jnp.tanh(x @ x.T))(jnp.ones((64, 64))).block_until_ready()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(cache)
    assert any(cache.iterdir())


def test_the_cache_folder_is_the_users_unless_turned_off(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert commands.cache_folder(env) == str(tmp_path / "pairviz-jax" / "xla")
    assert commands.cache_folder({**env, "PAIRVIZ_XLA_CACHE": "/x/y"}) == "/x/y"
    for off in ("0", "off", ""):
        assert commands.cache_folder({**env, "PAIRVIZ_XLA_CACHE": off}) is None
        assert commands.use_compile_cache({**env, "PAIRVIZ_XLA_CACHE": off}) is None
