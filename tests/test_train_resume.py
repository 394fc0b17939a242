"""Checkpoints: SIGKILL-and-restart equals an uninterrupted run, bit for bit.

Runs ``train_and_evaluate`` in subprocesses (4 fake CPU devices) and, for reference (the
``reference`` fixture of ``tests/conftest.py``), in the test process on 4 of its 8 devices, on
the in-memory synthetic dataset. Several processes over loopback (``jax.distributed``) are
``tests/test_train_multihost.py``'s, with the same program.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from pairviz_jax.train import Checkpointer, load_params
from pairviz_jax.train.config import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 8


def run_config():
    """The run of every test here: a tiny ViT with dropout on the synthetic data."""
    c = base_config()
    c.model.variant, c.model.proj_dim, c.model.dropout = "mu/4", 8, 0.1
    c.input.image_size = 16
    c.batch_size = c.eval.batch_size = 8
    c.total_steps = TOTAL
    c.checkpoint_every, c.keep_checkpoints, c.keep_checkpoint_every = 2, 2, 4
    c.log_every, c.eval_every = 1, -1
    c.optim.lr, c.loss.scale = 0.1, 16.0
    return c


# A training process: argv = workdir, device count, [process id, process count, port],
# [slow]. "slow" sleeps 0.3 s per step so that the test can kill it mid-run. One process
# trains on the first devices of 8 fake ones, as the test process's reference run does: XLA's
# cache key holds the client's device count, so its programs come from the suite's cache
# instead of compiling again (4 s of CPU a process). Several processes have ndev each.
PROGRAM = r"""
import logging, os, sys, time
logging.basicConfig(level=logging.WARNING)
logging.getLogger("pairviz_jax").setLevel(logging.INFO)
workdir, ndev = sys.argv[1], int(sys.argv[2])
multi = len(sys.argv) > 5
extra = os.environ.get("PAIRVIZ_TEST_XLA_FLAGS", "")
local = ndev if multi else 8
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local} {extra}"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
from pairviz_jax.train import loop, sharding
from tests.test_train_resume import run_config
if multi:
    pid, nproc, port = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    sharding.initialize_distributed(f"127.0.0.1:{port}", nproc, pid)
if sys.argv[-1] == "slow":
    check = loop._check_labels
    loop._check_labels = lambda *a: (time.sleep(0.3), check(*a))
devices = None if multi else jax.devices()[:ndev]
out = loop.train_and_evaluate(run_config(), workdir, devices=devices)
print("RESULT", jax.process_index(), out["loss"], out["grad_norm"], flush=True)
"""


def _start(workdir, ndev=4, *extra):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-c", PROGRAM, str(workdir), str(ndev), *map(str, extra)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _same_params(a, b, **tol):
    pa, _ = load_params(a)
    pb, _ = load_params(b)
    la, lb = _leaves(pa), _leaves(pb)
    assert la.keys() == lb.keys()
    for k in la:
        if tol:
            np.testing.assert_allclose(la[k], lb[k], err_msg=k, **tol)
        else:
            np.testing.assert_array_equal(la[k], lb[k], err_msg=k)


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


def test_sigkill_and_restart_matches_uninterrupted_run(reference, tmp_path):
    proc = _start(tmp_path, 4, "slow")
    ckpts = tmp_path / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (ckpts / "4").is_dir():  # appears only once complete (atomic rename)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = Checkpointer(ckpts).latest_step()
    assert killed_at is not None and 4 <= killed_at < TOTAL
    out = _finish(_start(tmp_path))
    assert f"at step {killed_at}." in out  # resumed, not restarted
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == list(range(1, TOTAL + 1))  # each step once, however late the kill came
    # Same parameters, optimiser included, bit for bit.
    _same_params(reference, tmp_path)
    # Kept: the last two, and multiples of 4 forever (maps across training).
    assert sorted(Checkpointer(ckpts).all_steps()) == [4, 6, 8]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
