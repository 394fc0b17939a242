"""Test setup: 8 fake CPU devices (for sharding tests), float32 matmuls, no network.

Compiled programs are shared across tests, pytest-xdist workers and the subprocesses
tests start (CLI runs, multi-process jobs): JAX's persistent compilation cache is pointed
at one fresh folder per test session, so a program whose HLO another test already compiled
is loaded instead of compiled again (a tiny model's init or train step costs seconds of
XLA compilation, its execution milliseconds). The folder is made by the first process to
load this file (the controller under ``-n``) and handed down through the environment;
it starts empty each session, so measured suite times are cold-cache times. A cache entry
read while another process is still writing it is recompiled (JAX warns, nothing fails).
Set ``JAX_COMPILATION_CACHE_DIR`` yourself to keep a cache across sessions.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="pairviz-jax-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
