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

# Tests compile hundreds of tiny programs and run each a few times: XLA's backend optimisations
# (LLVM -O2) cost more than they save, so tests compile at -O0 (measured: 40 % less CPU for the
# gradient-method tests). Every process a test starts gets the same flags (PAIRVIZ_TEST_XLA_FLAGS,
# read by the launchers in tests/), so results compared bit for bit across processes come from
# the same code. The XLA:CPU miscompilation of pairviz_jax._xla reproduces at -O0 too, so its
# guard still guards. PAIRVIZ_TEST_FAST_COMPILE=0 compiles as users do.
if os.environ.get("PAIRVIZ_TEST_FAST_COMPILE") != "0":
    os.environ.setdefault("PAIRVIZ_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault(
    "XLA_FLAGS",
    f"--xla_force_host_platform_device_count=8 {os.environ.get('PAIRVIZ_TEST_XLA_FLAGS', '')}",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

import pairviz_jax  # noqa: E402, F401  (its XLA flags before anything starts the backend)

jax.config.update("jax_default_matmul_precision", "highest")
