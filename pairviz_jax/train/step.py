"""The pure train step and the embedding step, jitted over the data mesh.

``train_step(state, batch, rng) -> (state, metrics)`` is a pure function of its inputs: the
dropout key is ``fold_in(rng, state.step)``, so a resumed run draws the same keys as an
uninterrupted one. The jitted version donates the state and keeps it replicated while the
batch is split over the ``data`` axis; the loss is over the *global* batch (Proxy Anchor's
normalisation by the proxies present in the batch is unchanged by the number of devices).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from pairviz_jax import explain
from pairviz_jax.data import preprocess
from pairviz_jax.train import sharding
from pairviz_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def preprocess_images(
    images: jax.Array, mean: Sequence[float] | None, std: Sequence[float] | None
) -> jax.Array:
    """uint8 [B, H, W, 3] -> float32 ``(x / 255 - mean) / std``; float images pass unchanged."""
    if images.dtype != jnp.uint8:
        return images.astype(jnp.float32)
    return preprocess.model_input(images, mean, std)


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    loss_fn: Callable[..., jax.Array],
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accum_steps: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[TrainState, Metrics]:
    """One optimiser step on a batch.

    Args:
      state: the current state.
      batch: ``image`` [B, H, W, 3] (uint8, or float already normalised), ``label`` [B] int,
        optionally ``valid`` [B] bool (examples that take part in the loss).
      rng: base PRNG key of the run; folded with ``state.step`` here.
      model: the embedding network.
      loss_fn: ``f(embeddings, labels, head_params, weights) -> scalar``.
      tx: the optimiser.
      schedule: the learning-rate schedule (for the logged ``lr``).
      accum_steps: gradients are averaged over this many micro-batches of ``B / accum_steps``
        examples (strided, so each device contributes to each). For the batch-coupled losses
        this is the mean of the micro-batch losses, not the loss of the whole batch.
      mean, std: per-channel normalisation of uint8 images.

    Returns:
      The new state and ``{"loss", "grad_norm", "param_norm", "lr"}`` float32 scalars
      (``grad_norm`` before clipping).
    """
    rng = jax.random.fold_in(rng, state.step)
    images = preprocess_images(batch["image"], mean, std)
    labels = batch["label"].astype(jnp.int32)
    weights = batch.get("valid")
    weights = (
        jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    )

    def loss_and_grad(params, x, y, w, key):
        def f(p):
            emb, _ = model.apply({"params": p["model"]}, x, train=True, rngs={"dropout": key})
            return loss_fn(emb.astype(jnp.float32), y, p["head"], w)

        return jax.value_and_grad(f)(params)

    if accum_steps == 1:
        loss, grads = loss_and_grad(state.params, images, labels, weights, rng)
    else:
        b = labels.shape[0]
        if b % accum_steps:
            raise ValueError(f"batch {b} is not divisible by accum_steps={accum_steps}")
        split = lambda x: x.reshape(b // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)

        def body(carry, xs):
            loss_sum, grad_sum = carry
            x, y, w, i = xs
            loss_i, g = loss_and_grad(state.params, x, y, w, jax.random.fold_in(rng, i))
            return (loss_sum + loss_i, jax.tree.map(jnp.add, grad_sum, g)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        xs = (split(images), split(labels), split(weights), jnp.arange(accum_steps))
        (loss, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), xs)
        loss = loss / accum_steps
        grads = jax.tree.map(lambda g: g / accum_steps, grads)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def jit_train_step(
    mesh: Mesh, state_sharding: Any, **kwargs: Any
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """``train_step`` jitted over ``mesh`` with the state donated.

    Args:
      mesh: the data mesh.
      state_sharding: pytree of shardings matching the state (replicated).
      **kwargs: the static arguments of :func:`train_step` (model, loss_fn, tx, ...).
    """
    repl = sharding.replicated(mesh)
    return jax.jit(
        functools.partial(train_step, **kwargs),
        in_shardings=(state_sharding, sharding.data_sharded(mesh), repl),
        out_shardings=(state_sharding, repl),
        donate_argnums=(0,),
    )


def jit_embed(
    mesh: Mesh,
    model: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
    """``embed(model_params, images [B, H, W, 3]) -> embedding [B, E]``, jitted.

    The embedding is float32 and gathered to every host; the forward pass is
    ``explain.embed``'s (the package's one embed function), placed on the mesh here.
    """

    def embed(params, images):
        x = preprocess_images(images, mean, std)
        return explain.embed(model, {"params": params}, x)

    return jax.jit(
        embed,
        in_shardings=(sharding.replicated(mesh), sharding.data_sharded(mesh)),
        out_shardings=sharding.replicated(mesh),
    )
