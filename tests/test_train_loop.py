"""The loop: logs, curves, resume, non-finite losses, labels, pretrained init, iterator state."""

import json
import logging

import jax
import numpy as np
import pytest

from pairviz_jax import checkpoints
from pairviz_jax.train import Checkpointer, load_params, train_and_evaluate
from pairviz_jax.train import input as input_lib
from pairviz_jax.train import state as state_lib
from pairviz_jax.train.config import base_config, override


def tiny(**overrides):
    c = base_config()
    c.model.variant, c.model.proj_dim = "mu/4", 8
    c.input.image_size = 16
    c.batch_size = c.eval.batch_size = 8
    c.total_steps = 4
    c.checkpoint_every, c.log_every, c.eval_every = 2, 2, 2
    c.eval.ks = (1, 4)
    c.optim.lr, c.loss.scale = 0.1, 16.0
    return override(c, **overrides)


ONE = jax.devices()[:1]


def test_run_logs_evaluates_checkpoints_and_resumes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pairviz_jax")
    c = tiny()
    c.eval.extra = {"seen": {"split": "train", "options": {}}}
    out = train_and_evaluate(c, str(tmp_path), devices=ONE)
    assert out["step"] == 4 and np.isfinite(out["loss"])
    records = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/recall@1" in r]
    assert [r["step"] for r in train] == [2, 4] and [r["step"] for r in evals] == [2, 4]
    assert all(r["steps_per_s"] > 0 and r["images_per_s"] > 0 for r in train)
    assert {"eval/map@r", "eval/recall@4", "eval/r_precision"} <= set(evals[-1])
    assert evals[-1]["eval/num_queries"] == 64  # the 64 test images of unseen classes
    assert evals[-1]["eval_seen/num_queries"] == 256  # the extra split: training classes
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert json.load(open(tmp_path / "config.json"))["total_steps"] == 4
    progress = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert progress and "img/s" in progress[-1] and "ETA" in progress[-1]
    assert sorted(Checkpointer(tmp_path / "checkpoints").all_steps()) == [2, 4]
    # Rerunning a finished workdir resumes at the end: no step is repeated.
    caplog.clear()
    train_and_evaluate(c, str(tmp_path), devices=ONE)
    assert any("Resumed" in r.getMessage() and "step 4" in r.getMessage() for r in caplog.records)
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == len(records)


def test_non_finite_loss_raises(tmp_path):
    c = tiny(**{"input.synthetic.noise": float("nan"), "checkpoint_every": 100})
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train_and_evaluate(c, str(tmp_path), devices=ONE)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() is None  # nothing NaN saved


def test_label_outside_head_raises(tmp_path):
    c = tiny(num_classes=4)  # the synthetic data has 8 training classes
    with pytest.raises(ValueError, match="outside the head"):
        train_and_evaluate(c, str(tmp_path), devices=ONE)


def test_init_from_pretrained_keeps_new_head_fresh(tmp_path):
    c = tiny()
    model = state_lib.build_model(c.model)
    donor = state_lib.init_params(model, c, jax.random.key(1), 8)["model"]
    path = str(tmp_path / "pretrained.npz")
    checkpoints.save(path, {"params": donor}, model)
    c.init_from = path
    loaded = state_lib.init_params(model, c, jax.random.key(2), 8)["model"]
    np.testing.assert_array_equal(
        loaded["Transformer"]["encoder_norm"]["scale"],
        donor["Transformer"]["encoder_norm"]["scale"],
    )
    np.testing.assert_array_equal(loaded["embedding"]["kernel"], donor["embedding"]["kernel"])
    # The new projection ("head/.*", dont_load) keeps its fresh initialisation.
    assert not np.array_equal(loaded["head"]["kernel"], donor["head"]["kernel"])


@pytest.mark.parametrize("dataset", ["synthetic", "demo"])
def test_checkpoint_restores_data_iterator_position(tmp_path, dataset):
    c = tiny(**{"input.name": dataset})
    if dataset == "demo":  # the real pipeline (pairviz_jax.data), a few tiny glyphs
        c.input.options = {"demo_examples_per_class": 2, "num_threads": 1}
    it = input_lib.train_iterator(c, local_batch=8, process_index=0, process_count=1)
    next(it)
    state = {"params": {"w": jax.numpy.arange(3.0)}}
    ck = Checkpointer(tmp_path, save_every=1, async_save=False)
    ck.save(1, state, it, c)
    expected = [next(it)["label"] for _ in range(3)]
    it2 = input_lib.train_iterator(c, local_batch=8, process_index=0, process_count=1)
    restored, step = ck.restore({"params": {"w": jax.numpy.zeros(3)}}, it2)
    ck.close()
    assert step == 1
    np.testing.assert_array_equal(restored["params"]["w"], [0.0, 1.0, 2.0])
    for want in expected:
        np.testing.assert_array_equal(next(it2)["label"], want)
    params, config = load_params(tmp_path)  # the visualisation reader: numpy, config dict
    assert isinstance(params["w"], np.ndarray) and config["batch_size"] == 8
