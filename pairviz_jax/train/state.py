"""Train state, model and head construction, and the optimiser (SGD, 1-cycle, two groups).

The state is a plain pytree, ``TrainState(step, params, opt_state)``, with
``params = {"model": <the embedding network's params>, "head": {"weights": [C, E]}}``: the
ArcFace class weights or the Proxy Anchor proxies live next to the model and get their own
learning rate (``config.loss.head_lr_mult``, conventionally 100 for proxies) through
``optax.multi_transform``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pairviz_jax import losses

PyTree = Any

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@flax.struct.dataclass
class TrainState:
    """Everything a step changes.

    Attributes:
      step: int32 scalar, optimiser steps taken.
      params: ``{"model": ..., "head": {"weights": [C, E]}}``, float32.
      opt_state: the optax state of ``params``.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree


def build_model(model_config: Mapping[str, Any]) -> nn.Module:
    """The embedding network named by ``config.model``.

    Args:
      model_config: ``name`` (``"vit"`` or ``"resnet"``), ``variant`` (``"B/16"``,
        ``"R101x1"``), ``dtype`` (``"float32"``/``"bfloat16"``) and any further module
        attributes (``proj_dim``, ``class_token``, ...).

    Returns:
      A flax module whose ``apply(variables, images, train=...)`` returns
      ``(embedding [B, E], out)``.
    """
    cfg = {k: v for k, v in dict(model_config).items() if v is not None}
    name = cfg.pop("name")
    variant = cfg.pop("variant")
    cfg["dtype"] = _DTYPES[cfg.get("dtype", "float32")]
    # Explicit attributes win over the variant's (e.g. block_sizes for a tiny test ResNet).
    if name == "vit":
        from pairviz_jax.models.vit import ViT, decode_variant

        return ViT(**{**decode_variant(variant), **cfg})
    if name == "resnet":
        from pairviz_jax.models.resnet import ResNet, decode_resnet

        return ResNet(**{**decode_resnet(variant), **cfg})
    raise ValueError(f"config.model.name must be 'vit' or 'resnet', got {name!r}")


def head_loss_fn(loss_config: Mapping[str, Any]) -> Callable[..., jax.Array]:
    """``f(embeddings [B, E], labels [B], head_params, weights [B]) -> scalar`` for the config."""
    name = loss_config["name"]
    if name == "arcface":
        scale, margin = float(loss_config["scale"]), float(loss_config["margin"])
        return lambda e, y, h, w: losses.arcface_loss(e, y, h["weights"], scale, margin, w)
    if name == "proxy_anchor":
        alpha, delta = float(loss_config["alpha"]), float(loss_config["delta"])
        return lambda e, y, h, w: losses.proxy_anchor_loss(e, y, h["weights"], alpha, delta, w)
    raise ValueError(f"config.loss.name must be 'arcface' or 'proxy_anchor', got {name!r}")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The 1-cycle schedule (Smith & Topin 2019) over ``config.total_steps`` optimiser steps."""
    o = config.optim
    return optax.cosine_onecycle_schedule(
        transition_steps=int(config.total_steps),
        peak_value=float(o.lr),
        pct_start=float(o.pct_start),
        div_factor=float(o.div_factor),
        final_div_factor=float(o.final_div_factor),
    )


def _decay_mask(params: PyTree) -> PyTree:
    """Weight decay on matrices and kernels only (ndim > 1), not on biases and norms."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _group(o: ml_collections.ConfigDict, lr: optax.Schedule, weight_decay: float):
    """The update of one parameter group: SGD (the paper) or AdamW, with weight decay."""
    name = o.get("name", "sgd")
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay, mask=_decay_mask),
            optax.sgd(lr, momentum=float(o.momentum) or None, nesterov=bool(o.nesterov)),
        )
    if name == "adamw":
        return optax.adamw(
            lr, b1=float(o.b1), b2=float(o.b2), weight_decay=weight_decay, mask=_decay_mask
        )
    raise ValueError(f"config.optim.name must be 'sgd' or 'adamw', got {name!r}")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Clipping, then SGD with momentum (or AdamW) and weight decay per group (model / head).

    The head's learning rate is the model's times ``config.loss.head_lr_mult``.
    """
    o = config.optim
    schedule = learning_rate_schedule(config)
    mult = float(config.loss.head_lr_mult)
    groups = {
        "model": _group(o, schedule, float(o.weight_decay)),
        "head": _group(o, lambda step: mult * schedule(step), float(config.loss.head_weight_decay)),
    }
    tx = optax.multi_transform(groups, {"model": "model", "head": "head"})
    if o.get("grad_clip_norm"):
        tx = optax.chain(optax.clip_by_global_norm(float(o.grad_clip_norm)), tx)
    return tx


def init_params(
    model: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array, num_classes: int
) -> dict[str, PyTree]:
    """Fresh ``{"model", "head"}`` parameters; the model from ``config.init_from`` if set.

    Args:
      model: from :func:`build_model`.
      config: needs ``input.image_size`` and optionally ``init_from`` (a pretrained
        checkpoint read by ``pairviz_jax.checkpoints.load``) with ``init_dont_load``
        (patterns of parameters kept at their fresh values).
      rng: PRNG key.
      num_classes: rows C of the head.

    Returns:
      The parameter tree, float32.
    """
    k_model, k_head = jax.random.split(rng)
    size = int(config.input.image_size)
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, dummy, train=False))(
        k_model
    )
    variables = flax.core.unfreeze(variables)
    if config.get("init_from"):
        from pairviz_jax import checkpoints  # the pretrained-weights module (issue 3)

        variables = checkpoints.load(
            config.init_from,
            model,
            image_size=size,
            dont_load=tuple(config.get("init_dont_load") or ()),
            init_variables=variables,
        )
    emb_dim = jax.eval_shape(lambda v: model.apply(v, dummy)[0], variables).shape[-1]
    head = jax.random.normal(k_head, (int(num_classes), emb_dim), jnp.float32)
    return {"model": variables["params"], "head": {"weights": head / jnp.sqrt(emb_dim)}}


def create_train_state(params: PyTree, tx: optax.GradientTransformation) -> TrainState:
    """Step 0 state for ``params``."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
