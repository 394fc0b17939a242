"""Test setup: 8 fake CPU devices (for sharding tests), float32 matmuls, no network."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

import pairviz_jax  # noqa: E402, F401  (its XLA flags before anything starts the backend)

jax.config.update("jax_default_matmul_precision", "highest")
