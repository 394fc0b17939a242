"""Argument checks that give a clear error before anything reaches XLA."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True for a value we can inspect now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_rank(name: str, x, min_rank: int, layout: str) -> None:
    """Raises ValueError unless ``x.ndim >= min_rank``."""
    ndim = getattr(x, "ndim", None)
    if ndim is None or ndim < min_rank:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{name} must be {layout} (rank >= {min_rank}), got shape {shape}")


def check_finite(name: str, x) -> None:
    """Raises ValueError if a concrete ``x`` holds NaN or Inf; no-op under tracing."""
    if not is_concrete(x):
        return
    if isinstance(x, np.ndarray):
        ok = bool(np.isfinite(x).all())
    else:
        ok = bool(jnp.isfinite(x).all())
    if not ok:
        raise ValueError(f"{name} contains NaN or Inf values")


def square_grid(n: int, name: str) -> tuple[int, int]:
    """(K, K) for a token count n = K*K; ValueError otherwise."""
    k = math.isqrt(n)
    if k * k != n:
        raise ValueError(
            f"{name} has {n} tokens, which is not a square K*K grid; pass grid=(h, w) "
            "explicitly for non-square images"
        )
    return k, k
