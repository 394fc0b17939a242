"""``visualize.py batch`` and ``visualize.py evaluate`` on a tiny model."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import visualize
from pairviz_jax import batch
from pairviz_jax.data import preprocess
from pairviz_jax.models import ViT, decode_variant
from pairviz_jax.plotting import LoadedModel


@pytest.fixture(scope="module")
def loaded():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    mean, std = preprocess.NORMALIZATION["demo"]
    return LoadedModel(model, variables, (16, 16), mean, std, "tiny")


@pytest.fixture
def tiny_model(loaded, monkeypatch):
    monkeypatch.setattr(visualize, "_model", lambda args, plotting: loaded)
    return loaded


def test_batch_subcommand_writes_and_resumes(tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["batch", "--weights", "unused.npz", "--images", "demo:test:10", "--all-pairs"]
    argv += ["--out", out, "--shard-size", "16", "--png", "2"]
    assert visualize.main(argv) == 0
    assert capsys.readouterr().out.strip() == os.path.join(out, "manifest.json")
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["summary"]["written"] == 45 and len(manifest["shards"]) == 3
    assert sorted(os.listdir(os.path.join(out, "png"))) == ["000000000.png", "000000001.png"]
    res = batch.BatchResults(out)
    first = res.get(0)
    assert (first["a"], first["b"]) == ("demo:test:0", "demo:test:1")
    assert first["maps_a"].shape == (4, 4) and np.isfinite(first["score"])
    assert visualize.main(argv) == 0  # done already: nothing recomputed
    assert "already complete" in capsys.readouterr().err


def test_batch_subcommand_bad_input_is_one_line(tiny_model, tmp_path, capsys):
    argv = ["batch", "--weights", "w.npz", "--pairs", str(tmp_path / "nope.csv")]
    assert visualize.main([*argv, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "nope.csv" in err and err.count("\n") == 1
    argv = ["batch", "--weights", "w.npz", "--images", "demo:test:5", "--out", str(tmp_path)]
    assert visualize.main(argv) == 1
    assert "--top-k" in capsys.readouterr().err


def test_evaluate_subcommand_prints_the_table_and_plots(tiny_model, tmp_path, capsys):
    png = str(tmp_path / "curves.png")
    argv = ["evaluate", "--weights", "w.npz", "--pairs", "3", "--steps", "2", "--out", png]
    assert visualize.main(argv) == 0
    out = capsys.readouterr().out
    assert "| paired, authors (R @ gamma) |" in out and "pointing_game" in out
    assert "transpose better than rollout by: deletion_auc" in out
    assert "shared_share" not in out
    assert out.strip().endswith(png) and os.path.getsize(png) > 1000
    # The distractor images need 32 px; this model takes 16: one clear line, exit 1.
    assert visualize.main(argv + ["--distractor"]) == 1
    assert "image_size >= 32" in capsys.readouterr().err
