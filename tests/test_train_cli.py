"""train.py's command line: every config mistake is one line, exit status 2, nothing touched.

``cli.main`` runs in-process on fresh ``absl.flags.FlagValues`` (train.py's
``define_flags``); two cases go through a real ``python train.py`` to see what a terminal sees.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from absl import flags

import train
from pairviz_jax.train import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.py")

TINY = """
from pairviz_jax.train.config import base_config

def get_config(arg=None):
    if arg not in (None, "long"):
        raise ValueError(f"unknown config argument {arg!r}; expected long")
    c = base_config()
    c.model.variant, c.model.proj_dim = "mu/4", 8
    c.input.image_size = 16
    c.batch_size = c.eval.batch_size = 8
    c.total_steps = 6 if arg == "long" else 2
    c.checkpoint_every, c.log_every, c.eval_every = 2, 2, -1
    c.optim.lr, c.loss.scale = 0.1, 16.0
    return c
"""


def _main(argv, capsys):
    argv = ["train.py", *map(str, argv)]
    rc = cli.main(argv, train.define_flags(flags.FlagValues(), argv), train.__doc__)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.py"
    path.write_text(TINY)
    return str(path)


def _train(workdir, config):
    argv = ["train.py", "--config", config, "--workdir", str(workdir)]
    assert cli.main(argv, train.define_flags(flags.FlagValues(), argv), "") == 0
    return workdir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_config):
    """A finished 2-step run; the tests that use it must leave it as it is."""
    return _train(tmp_path_factory.mktemp("finished") / "run", tiny_config)


def _snapshot(workdir):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(workdir.rglob("*"))}


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--config", "configs/nope.py"], "--config configs/nope.py: no such file"),
        (["--config", f"{DEMO}:runlcal"], "unknown config argument 'runlcal'"),
        (["--config", DEMO, "--config.num_steps=10"], "has no field 'num_steps'"),
        (["--config", DEMO, "--config.optim.nope", "3"], "has no field 'optim.nope'"),
        (["--config", DEMO, "--config.total_steps=abc"], "--config.total_steps=abc"),
        (["--config", DEMO, "--config.optim.lr=fast"], "could not convert string to float"),
        (["--config", DEMO, "--frobnicate"], "frobnicate"),
        ([], "--config FILE[:ARG] is required"),
    ],
)
def test_config_mistakes_are_one_line_and_touch_nothing(finished_run, capsys, argv, needle):
    before = _snapshot(finished_run)
    config_json = (finished_run / "config.json").read_text()
    rc, out, err = _main([*argv, "--workdir", finished_run], capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error:"), err
    assert needle in err and "Traceback" not in err, err
    assert _snapshot(finished_run) == before
    assert (finished_run / "config.json").read_text() == config_json  # was emptied before


def test_missing_workdir_flag(tiny_config, capsys):
    rc, _, err = _main(["--config", tiny_config], capsys)
    assert rc == 2 and "--workdir DIR is required" in err


def test_another_config_or_argument_is_refused_with_the_diff(
    tmp_path, tiny_config, finished_run, capsys
):
    # A copy of the module's finished run (the same files a second training would write).
    finished_run = pathlib.Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = _snapshot(finished_run)
    # A finished 2-step run pointed at the 6-step config argument: refused, not extended.
    rc, _, err = _main(["--config", f"{tiny_config}:long", "--workdir", finished_run], capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "total_steps 2 -> 6" in err and "--allow_config_change" in err
    rc, _, err = _main(
        ["--config", tiny_config, "--config.optim.lr=0.5", "--workdir", finished_run], capsys
    )
    assert rc == 2 and "optim.lr 0.1 -> 0.5" in err
    assert _snapshot(finished_run) == before
    # The same config again: nothing to do, the run's final metrics.
    rc, out, err = _main(["--config", tiny_config, "--workdir", finished_run], capsys)
    assert rc == 0 and "'step': 2" in out and "loss" in out, err
    # Allowed: goes on to step 6 and remembers the new config.
    argv = ["--config", f"{tiny_config}:long", "--workdir", finished_run, "--allow_config_change"]
    rc, out, err = _main(argv, capsys)
    assert rc == 0 and "'step': 6" in out, err
    assert json.load(open(finished_run / "config.json"))["total_steps"] == 6


def test_help_lists_the_config_fields_and_exits_0(tiny_config, capsys):
    rc, out, _ = _main(["--help"], capsys)
    assert rc == 0
    assert "optim.lr = 0.01" in out and "1-cycle peak learning rate" in out
    assert "--allow_config_change" in out and "--workdir" in out
    rc, out, _ = _main(["--config", tiny_config, "--help"], capsys)
    assert rc == 0 and "total_steps = 2" in out and f"of {tiny_config}" in out


def test_a_terminal_sees_one_line_and_status_2(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"total_steps": 300}')
    for argv, rc_want in (
        (["--config", "configs/nope.py", "--workdir", str(run)], 2),
        (["--help"], 0),
    ):
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "train.py"), *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,  # a hang, not load (importing JAX alone can take a minute)
        )
        assert proc.returncode == rc_want, proc.stderr
        if rc_want:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and "no such file" in lines[0], proc.stderr
        else:
            assert "config fields" in proc.stdout
    assert (run / "config.json").read_text() == '{"total_steps": 300}'
    assert sorted(os.listdir(run)) == ["config.json"]
