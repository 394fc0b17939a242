"""What a model's ``init`` makes, as shapes, and its compiled ``init``: each traced once per
model configuration (and input shape), not once per call.

Flax modules are frozen dataclasses, hashed by their settings, so two equal models share one
entry. Loading a run or a checkpoint checks the file against these shapes; a figure that loads
several checkpoints of one run (``visualize.py training``) traced ``model.init`` once per
checkpoint before.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


@functools.lru_cache(maxsize=64)
def _abstract(model: nn.Module, shape: tuple[int, ...], dtype: jnp.dtype) -> Any:
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(shape, dtype))


def abstract_variables(model: nn.Module, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    """``jax.eval_shape(model.init, key, zeros(shape, dtype))``: the variables' tree of
    ``jax.ShapeDtypeStruct`` for images of ``shape`` [B, H, W, C]. Shared between callers:
    read it, do not change it."""
    key = (model, tuple(int(s) for s in shape), jnp.dtype(dtype))
    return _abstract(*key) if _hashable(model) else _abstract.__wrapped__(*key)


def _hashable(model: nn.Module) -> bool:
    """Whether the model's settings hash (a field holding e.g. an array or a dict does not)."""
    try:
        hash(model)
    except TypeError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def _jitted_init(model: nn.Module) -> Any:
    return jax.jit(model.init)


def jitted_init(model: nn.Module) -> Any:
    """``jax.jit(model.init)``, one per model configuration (so compiled once per input shape);
    a new one for a model whose settings do not hash."""
    return _jitted_init(model) if _hashable(model) else jax.jit(model.init)
