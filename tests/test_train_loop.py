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
def test_the_input_of_a_step_follows_from_the_step(tmp_path, dataset):
    c = tiny(**{"input.name": dataset})
    if dataset == "demo":  # the real pipeline (pairviz_jax.data), a few tiny glyphs
        c.input.options = {"demo_examples_per_class": 2, "num_threads": 1}
    it = input_lib.train_iterator(c, local_batch=8, process_index=0, process_count=1)
    next(it)
    expected = [next(it) for _ in range(3)]
    it2 = input_lib.train_iterator(c, local_batch=8, process_index=0, process_count=1, start_step=1)
    for want in expected:
        got = next(it2)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    # Two processes read the two halves of the same global batches.
    halves = [
        input_lib.train_iterator(c, local_batch=4, process_index=i, process_count=2, start_step=1)
        for i in range(2)
    ]
    for want in expected:
        got = [next(h) for h in halves]
        for key in want:
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])
    state = {"params": {"w": jax.numpy.arange(3.0)}}
    ck = Checkpointer(tmp_path, save_every=1, async_save=False)
    ck.save(1, state, None, c)
    restored, step = ck.restore({"params": {"w": jax.numpy.zeros(3)}})
    ck.close()
    assert step == 1
    np.testing.assert_array_equal(restored["params"]["w"], [0.0, 1.0, 2.0])
    params, config = load_params(tmp_path)  # the visualisation reader: numpy, config dict
    assert isinstance(params["w"], np.ndarray) and config["batch_size"] == 8


# --------------------------------------------------------------------------- restarts


class Killed(Exception):
    """Stands in for a SIGKILL at a chosen point of the loop."""


def _steps(workdir):
    """(step, kind) of every metrics.jsonl record, in order."""
    out = []
    for line in open(workdir / "metrics.jsonl"):
        r = json.loads(line)
        out.append((r["step"], "eval" if "eval/recall@1" in r else "train"))
    return out


def test_metrics_hold_each_step_once_after_kills(tmp_path, monkeypatch):
    """A kill after step 3 was logged but before its checkpoint (step 4): the restart
    resumes at 2 and logs 3 again. Before, metrics.jsonl then held step 3 twice."""
    from pairviz_jax.train import loop

    c = tiny(**{"log_every": 1, "eval_every": 2, "total_steps": 6, "async_checkpoints": False})
    calls = {"n": 0}
    check = loop._check_labels

    def kill_at_step_4(labels, num_classes):  # called at the start of every step
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed
        check(labels, num_classes)

    workdir = tmp_path / "killed"
    monkeypatch.setattr(loop, "_check_labels", kill_at_step_4)
    with pytest.raises(Killed):
        train_and_evaluate(c, str(workdir), devices=ONE)
    assert _steps(workdir)[-1] == (3, "train")  # logged past the checkpoint at 2
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.0, "tim')  # and a torn line
    monkeypatch.setattr(loop, "_check_labels", check)
    train_and_evaluate(c, str(workdir), devices=ONE)
    # What an uninterrupted run logs: every step, an evaluation every 2 steps.
    want = [(1, "train"), (2, "train"), (2, "eval"), (3, "train"), (4, "train"), (4, "eval")]
    assert _steps(workdir) == [*want, (5, "train"), (6, "train"), (6, "eval")]


def test_restart_after_a_kill_in_the_final_evaluation_writes_it(tmp_path, monkeypatch, caplog):
    """The last checkpoint is final but its evaluation was never written: the restart
    evaluates, logs and draws the curves. Before, it printed only {'step': 4}."""
    from pairviz_jax.train import loop

    caplog.set_level(logging.INFO, logger="pairviz_jax")
    c = tiny(**{"eval_every": 0, "async_checkpoints": False})
    evaluate = loop.evaluate

    def killed_in_final_eval(*args, **kw):
        raise Killed

    monkeypatch.setattr(loop, "evaluate", killed_in_final_eval)
    with pytest.raises(Killed):
        train_and_evaluate(c, str(tmp_path), devices=ONE)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 4
    assert not (tmp_path / "curves.png").exists()
    assert "eval" not in {k for _, k in _steps(tmp_path)}
    monkeypatch.setattr(loop, "evaluate", evaluate)
    out = train_and_evaluate(c, str(tmp_path), devices=ONE)
    assert out["step"] == 4 and 0.0 < out["eval/recall@1"] <= 1.0 and np.isfinite(out["loss"])
    assert _steps(tmp_path) == [(2, "train"), (4, "train"), (4, "eval")]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert any("its evaluation was not written" in r.getMessage() for r in caplog.records)
    from pairviz_jax.train.runfiles import run_status

    assert run_status(str(tmp_path)).finished
    # A third start has nothing to do and says what the run ended with.
    again = train_and_evaluate(c, str(tmp_path), devices=ONE)
    assert again["eval/recall@1"] == out["eval/recall@1"] and again["loss"] == out["loss"]
    assert _steps(tmp_path) == [(2, "train"), (4, "train"), (4, "eval")]


def test_a_workdir_remembers_its_config(tmp_path):
    from pairviz_jax.train.runfiles import ConfigChangedError

    c = tiny(**{"eval_every": -1})
    train_and_evaluate(c, str(tmp_path), devices=ONE)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    config_json = (tmp_path / "config.json").read_text()
    longer = tiny(**{"eval_every": -1, "total_steps": 8, "optim.lr": 0.2})
    with pytest.raises(ConfigChangedError) as info:
        train_and_evaluate(longer, str(tmp_path), devices=ONE)
    msg = str(info.value)
    assert "\n" not in msg and "total_steps 4 -> 8" in msg and "optim.lr 0.1 -> 0.2" in msg
    assert "--allow_config_change" in msg
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing touched
    assert (tmp_path / "config.json").read_text() == config_json
    out = train_and_evaluate(longer, str(tmp_path), devices=ONE, allow_config_change=True)
    assert out["step"] == 8
    assert json.load(open(tmp_path / "config.json"))["total_steps"] == 8


def test_load_params_prints_no_warning(tmp_path, caplog, capfd):
    """Reading one item of a checkpoint made orbax warn (absl) on every call."""
    ck = Checkpointer(tmp_path / "checkpoints", save_every=1, async_save=False)
    state = {"params": {"model": {"w": np.arange(3.0)}, "head": {"weights": np.ones((8, 8))}}}
    ck.save(2, state, None, tiny(total_steps=2))
    ck.close()
    caplog.clear()
    capfd.readouterr()
    caplog.set_level(logging.DEBUG)
    params, config = load_params(tmp_path)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], [r.getMessage() for r in warnings]
    assert capfd.readouterr().err == ""
    assert config["total_steps"] == 2 and params["head"]["weights"].shape == (8, 8)
    np.testing.assert_array_equal(params["model"]["w"], [0.0, 1.0, 2.0])
    assert logging.getLogger("absl").level != logging.ERROR  # the quiet block is undone
