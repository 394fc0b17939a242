"""Multi-process training done right: real processes on 127.0.0.1 (gloo collectives).

* A faked SLURM launch (2 tasks, ``SLURM_*`` variables) is detected without flags, and the
  two processes read distinct records of the real input pipeline (the demo dataset): every
  global batch is the one a single process reads, and no record twice; they write one
  checkpoint tree and one metrics record per step.
* A killed peer stops the survivor with one line; the run resumes on another number of
  processes (2 -> 1, and 1 -> 2) and ends with the parameters of an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pairviz_jax.train import input as input_lib
from pairviz_jax.train import peers
from tests.test_train_resume import REPO, _finish, _free_port, _same_params

# argv = workdir, local device count, mode ("slurm" | "flags PID NPROC PORT" | "single"),
# [slow]. Prints the ids of every batch it reads ("IDS step pid ids...") with --ids.
PROGRAM = r"""
import logging, os, sys, time
logging.basicConfig(level=logging.WARNING)
logging.getLogger("pairviz_jax").setLevel(logging.INFO)
workdir, ndev, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
extra = os.environ.get("PAIRVIZ_TEST_XLA_FLAGS", "")
local = 8 if mode == "single" else ndev  # one process: as test_train_resume.PROGRAM
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local} {extra}"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
from pairviz_jax.train import loop, sharding
from tests.test_train_multihost import demo_config
from tests.test_train_resume import run_config
if mode == "slurm":
    print("DETECTED", sharding.initialize_distributed(), flush=True)
elif mode == "flags":
    pid, nproc, port = map(int, sys.argv[4:7])
    sharding.initialize_distributed(f"127.0.0.1:{port}", nproc, pid)
config = demo_config() if "demo" in sys.argv else run_config()
if "slow" in sys.argv:
    check = loop._check_labels
    loop._check_labels = lambda *a: (time.sleep(0.3), check(*a))
if "ids" in sys.argv:
    make = loop.input_lib.train_iterator
    def logged(*a, start_step=0, **k):
        for step, batch in enumerate(make(*a, start_step=start_step, **k), start_step):
            ids = " ".join(map(str, batch["id"].tolist()))
            print("IDS", step, jax.process_index(), ids, flush=True)
            yield batch
    loop.input_lib.train_iterator = logged
devices = jax.devices()[:ndev] if mode == "single" else None
out = loop.train_and_evaluate(config, workdir, devices=devices)
print("RESULT", jax.process_index(), jax.process_count(), out["loss"], flush=True)
"""


def demo_config():
    """A tiny ViT on the demo dataset read by the real pipeline (``pairviz_jax.data``)."""
    from tests.test_train_resume import run_config

    c = run_config()
    c.input.name = "demo"
    c.input.options = {"demo_examples_per_class": 2, "num_threads": 1}
    c.total_steps, c.checkpoint_every = 3, 3
    return c


def _start(workdir, ndev, mode, *args, env=None):
    environ = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    environ.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-c", PROGRAM, str(workdir), str(ndev), mode, *map(str, args)],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_slurm_launch_is_detected_and_processes_read_distinct_records(tmp_path):
    port = _free_port()
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NTASKS": "2",
        "JAX_COORDINATOR_PORT": str(port),
    }
    procs = [
        _start(
            tmp_path, 1, "slurm", "demo", "ids",
            env={**slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)},
        )
        for i in range(2)
    ]  # fmt: skip
    outs = [_finish(p) for p in procs]
    assert all("DETECTED slurm" in out for out in outs)
    for i, out in enumerate(outs):
        assert f"process {i} of 2 (slurm), 1 local of 2 devices (cpu)" in out
        assert f"RESULT {i} 2 " in out
    # Two processes train as one run: the same loss on both, one checkpoint tree with no
    # per-process state (the input follows from the step), one metrics record per step
    # (process 0's). That they train like one process is the resume test's final check.
    results = [ln.split() for out in outs for ln in out.splitlines() if ln.startswith("RESULT")]
    assert len(results) == 2 and results[0][3:] == results[1][3:]
    last = demo_config().total_steps
    ckpt = tmp_path / "checkpoints" / str(last)
    assert {"config", "state"} <= set(os.listdir(ckpt)) and not (ckpt / "data").exists()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == list(range(1, last + 1))
    ids = {}
    for out in outs:
        for line in out.splitlines():
            if line.startswith("IDS"):
                _, step, pid, *rest = line.split()
                ids[int(step), int(pid)] = [int(x) for x in rest]
    # What one process reads as whole global batches: the same records, in the same slots.
    config = demo_config()
    single = input_lib.train_iterator(config, local_batch=8, process_index=0, process_count=1)
    for step in range(config.total_steps):
        batch = ids[step, 0] + ids[step, 1]
        assert len(set(batch)) == len(batch) == config.batch_size, (step, batch)
        np.testing.assert_array_equal(batch, next(single)["id"])


def _wait_for_checkpoint(workdir, step, procs, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if (workdir / "checkpoints" / str(step)).is_dir():  # complete once it appears
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {step}: {[p.poll() for p in procs]}")


def _kill_at(workdir, step, procs, victim):
    _wait_for_checkpoint(workdir, step, procs)
    victim.send_signal(signal.SIGKILL)
    victim.wait()


def test_resume_on_another_process_count_and_after_a_killed_peer(reference, tmp_path):
    """1 process, killed -> 2 processes, one killed -> 1 process: the uninterrupted result."""
    first = _start(tmp_path, 4, "single", "slow")
    _kill_at(tmp_path, 2, [first], first)
    # 1 -> 2: both resume from step 2; then process 1 dies and the survivor says so.
    port = _free_port()
    procs = [_start(tmp_path, 2, "flags", pid, 2, port, "slow") for pid in range(2)]
    _kill_at(tmp_path, 4, procs, procs[1])
    out, _ = procs[0].communicate(timeout=240)
    assert "Resumed from" in out and "at step 2." in out, out[-3000:]
    assert procs[0].returncode == peers.EXIT_PEER_LOST, out[-3000:]
    lines = [ln for ln in out.splitlines() if "process 1 stopped answering" in ln]
    assert len(lines) == 1 and "rerun the same command" in lines[0], out[-3000:]
    assert "Traceback" not in out and "Check failure" not in out
    # 2 -> 1: the same command on one process resumes and ends like the uninterrupted run.
    resumed = _finish(_start(tmp_path, 4, "single"))
    assert "Resumed from" in resumed and "RESULT 0 1 " in resumed
    _same_params(reference, tmp_path, rtol=1e-4, atol=1e-6)


def test_a_workdir_not_shared_is_refused_in_every_process(tmp_path):
    port = _free_port()
    procs = [_start(tmp_path / f"host{pid}", 1, "flags", pid, 2, port) for pid in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode != 0 and "RESULT" not in out
        assert "is not shared: process(es) [1] of 2 do not see what process 0 wrote" in out, out
    assert not (tmp_path / "host1" / "checkpoints").exists()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, "slurm"),
        ({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
          "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, None),
        ({"OMPI_MCA_orte_hnp_uri": "1.2.3.4", "OMPI_COMM_WORLD_SIZE": "4"}, "ompi"),
        ({"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3"}, "gketpu"),
        ({"KUBERNETES_SERVICE_HOST": "k", "JOB_COMPLETION_INDEX": "0"}, "k8s"),
    ],
)  # fmt: skip
def test_cluster_detection_reads_the_launchers_variables(env, expected):
    from pairviz_jax.train.sharding import detect_cluster

    assert detect_cluster(env) == expected


def _watchdog(workdir, index, count, exits, **kw):
    dog = peers.PeerWatchdog(workdir, lambda: "RESUME-HINT", exit_fn=exits.append, **kw)
    dog.index, dog.count = index, count
    return dog


def test_watchdog_names_a_silent_or_failed_peer_and_how_to_resume(tmp_path, capsys):
    exits = []
    a = _watchdog(tmp_path, 0, 2, exits, timeout_s=0.5, interval_s=0.05).start()
    b = _watchdog(tmp_path, 1, 2, [], timeout_s=0.5, interval_s=0.05).start()
    time.sleep(0.3)
    assert not exits  # both beat
    b._stop.set()  # process 1 dies: its counter stops
    b._thread.join()
    a._thread.join(timeout=30)
    assert exits == [peers.EXIT_PEER_LOST]
    line = capsys.readouterr().err.strip()
    assert line.startswith("process 0 of 2: process 1 stopped answering") and "RESUME-HINT" in line
    # A peer that failed says why; a finished one is never taken for dead.
    (tmp_path / ".processes" / "process_1").write_text("failed OSError: disk full")
    exits.clear()
    c = _watchdog(tmp_path, 0, 2, exits, timeout_s=0.5, interval_s=0.05).start()
    c._thread.join(timeout=30)
    assert exits == [peers.EXIT_PEER_LOST]
    assert "process 1 failed: OSError: disk full" in capsys.readouterr().err
    (tmp_path / ".processes" / "process_1").write_text("done")
    exits.clear()
    d = _watchdog(tmp_path, 0, 2, exits, timeout_s=0.2, interval_s=0.05).start()
    time.sleep(0.6)
    d.stop()
    assert not exits


def test_object_store_workdirs_stay_urls():
    from pairviz_jax.train.checkpointing import as_path

    assert os.fspath(as_path("gs://bucket/runs/a")) == "gs://bucket/runs/a"
    assert os.fspath(as_path("runs/a")) == os.path.abspath("runs/a")
