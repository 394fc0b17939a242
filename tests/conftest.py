"""Test setup: 8 fake CPU devices (for sharding tests), float32 matmuls, no network."""

import atexit
import os
import shutil
import tempfile

# One XLA compilation cache for the session: the test process and every process it starts (the
# command-line runs, the multi-process training and batch workers) compile each program once
# instead of once per process. PAIRVIZ_TEST_XLA_CACHE=0 turns it off; a cache directory set by
# the caller is kept.
_CACHE_ON = os.environ.get("PAIRVIZ_TEST_XLA_CACHE") != "0"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and _CACHE_ON:
    _CACHE = tempfile.mkdtemp(prefix="pairviz-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


# Tests compile thousands of tiny programs (3,800 in a run) and run each a few times, so
# compiling is most of the suite's CPU: tests compile at -O0 (XLA's LLVM -O2 costs more than it
# saves: 40 % less CPU for the gradient-method tests), with XLA:CPU's classic emitters instead of
# its MLIR fusion emitters and without XNNPACK (measured: XLA's compile time of the whole suite
# 348 s -> 150 s of CPU, the suite 414-477 s -> 367 s on 2 cores; at real sizes, where running
# costs more than compiling, both are slower, so the docs commands and every user keep XLA's
# defaults). Every process a test starts gets the same flags (PAIRVIZ_TEST_XLA_FLAGS, read by
# the launchers in tests/), so results compared bit for bit across processes come from the same
# code. The XLA:CPU miscompilation of pairviz_jax._xla reproduces with these flags too
# (tools/xla_ynn_repro.py: 3 of 4 wrong), so its guard still guards.
# An XLA flag a jaxlib does not know aborts it, so the two emitter flags are set only for the
# jaxlib versions they were measured on (-O0 alone elsewhere).
# PAIRVIZ_TEST_FAST_COMPILE=0 compiles as users do.
def _fast_compile_flags() -> str:
    from importlib.metadata import version

    flags = "--xla_backend_optimization_level=0"
    if version("jaxlib").startswith("0.10."):
        flags += " --xla_cpu_use_fusion_emitters=false --xla_cpu_use_xnnpack=false"
    return flags


if os.environ.get("PAIRVIZ_TEST_FAST_COMPILE") != "0":
    os.environ.setdefault("PAIRVIZ_TEST_XLA_FLAGS", _fast_compile_flags())
os.environ.setdefault(
    "XLA_FLAGS",
    f"--xla_force_host_platform_device_count=8 {os.environ.get('PAIRVIZ_TEST_XLA_FLAGS', '')}",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

import pairviz_jax  # noqa: E402, F401  (its XLA flags before anything starts the backend)

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

# The longest tests (each 10 to 40 s on 2 idle cores; many processes or a real model), started
# first. Under `pytest -n 2` (pyproject.toml: `--dist worksteal`) each worker runs its share
# from the front and an idle worker takes the back half of the other's queue, so a long test
# started last would leave one core idle at the end: these start first and the short tests
# fill in. Whole files where their tests share a module fixture (test_wheel, test_real_dinov2).
# Measured with `--durations`; the order changes no result (every test is independent).
SLOW_FIRST = (
    "tests/test_docs_commands.py::test_the_docs_commands_run_as_printed_in_order",
    "tests/test_train_multihost.py::test_resume_on_another_process_count_and_after_a_killed_peer",
    "tests/test_train_resume.py::test_sigkill_and_restart_matches_uninterrupted_run",
    "tests/test_wheel.py::",
    "tests/test_train_configs.py::test_paper_config_one_step_train_and_evaluate",
    "tests/test_train_multihost.py::test_slurm_launch_is_detected_and_processes_read_distinct",
    "tests/test_batch.py::test_three_workers_one_killed_midway_then_restarted",
    "tests/test_docs.py::test_the_docs_build_with_warnings_as_errors",
    "tests/test_train_loop.py::test_run_logs_evaluates_checkpoints_and_resumes",
    "tests/test_real_dinov2.py::",
    "tests/test_xla_regression.py::test_a_fresh_process_gets_the_flag_and_a_late_import_warns",
    "tests/test_train_multihost.py::test_a_workdir_not_shared_is_refused_in_every_process",
)


def pytest_collection_modifyitems(items):
    """``SLOW_FIRST``'s tests first, in its order; every other test after them, in the
    collection's order (a stable sort)."""

    def rank(item):
        found = (i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix))
        return next(found, len(SLOW_FIRST))

    items.sort(key=rank)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted 8-step run of ``tests/test_train_resume.run_config`` on 4 of the
    test process's devices, which the SIGKILL test (``test_train_resume``) and the multi-process
    resume test (``test_train_multihost``) compare with, bit for bit: built once per session."""
    import fcntl

    from pairviz_jax.train import train_and_evaluate
    from tests.test_train_resume import run_config

    # Once per session, not once per xdist worker: under xdist the workers' temporary
    # directories share the session's one; the first worker to take the lock trains, the
    # others wait for it and read its run.
    if "PYTEST_XDIST_WORKER" not in os.environ:
        workdir = tmp_path_factory.mktemp("reference")
        train_and_evaluate(run_config(), str(workdir), devices=jax.devices()[:4])
        return workdir
    shared = tmp_path_factory.getbasetemp().parent
    workdir = shared / "reference-run"
    with open(shared / "reference-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "reference-run.done").exists():
            train_and_evaluate(run_config(), str(workdir), devices=jax.devices()[:4])
            (shared / "reference-run.done").touch()
    return workdir
