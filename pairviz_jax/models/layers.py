"""Transformer layers shared by the ViT and its pooling heads.

Every layer takes the forward pass's ``Probe`` (``models.probe``) and reads what it
needs from it in one place. Detached (``probe.detach``), the forward values are
unchanged but the gradient treats the input-dependent scalings as constants:
the attention weights, the LayerNorm's 1/sigma and the activation's gate
(``act(z) = z * gate(z)``). The network is then linear in its input tokens
for the gradient, so gradient x input is conservative (Ali et al., ICML 2022,
"XAI for Transformers: better explanations through conservative
propagation"): the relevances sum to the output up to the bias terms.

Parameter names are those of flax's modules and the original ViT checkpoints
(``scale``/``bias``; ``query|key|value|out`` with ``kernel [D, H, D/H]``;
``Dense_0``/``Dense_1``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pairviz_jax.models.probe import NO_PROBE, Probe

Array = jax.Array

HEAD_FUSIONS = ("mean", "max", "min")
# Activations of the MLP: exact GELU (ViT, DINOv2, DeiT), tanh GELU (SigLIP,
# big_vision), QuickGELU (OpenAI CLIP) and SwiGLU (DINOv2-g).
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "swiglu")


def fuse_heads(weights: Array, head_fusion: str | None, axis: int = -3) -> Array:
    """Fuses attention heads by ``mean``, ``max`` or ``min`` (None: keep all)."""
    if head_fusion is None:
        return weights
    if head_fusion == "mean":
        return weights.mean(axis=axis)
    if head_fusion == "max":
        return weights.max(axis=axis)
    if head_fusion == "min":
        return weights.min(axis=axis)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS} or None, got {head_fusion!r}")


def gate(z: Array, act: str) -> Array:
    """g(z) with ``act(z) = z * g(z)``: the gate that detaching holds constant.

    Exact for every activation here: GELU is ``z * Phi(z)``, QuickGELU
    ``z * sigmoid(1.702 z)``, tanh-GELU ``z * (1 + tanh(...)) / 2``.
    """
    if act == "gelu":
        return 0.5 * (1.0 + jax.lax.erf(z / jnp.sqrt(2.0).astype(z.dtype)))
    if act == "gelu_tanh":
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * (1.0 + jnp.tanh(c * (z + 0.044715 * z**3)))
    if act == "quick_gelu":
        return jax.nn.sigmoid(1.702 * z)
    if act == "silu":
        return jax.nn.sigmoid(z)
    raise ValueError(f"unknown activation {act!r}")


def activation(z: Array, act: str, detach: bool = False) -> Array:
    """The activation; detached: ``z * stop_gradient(gate(z))`` (same value)."""
    if detach:
        return z * jax.lax.stop_gradient(gate(z, act))
    if act == "gelu":
        return nn.gelu(z, approximate=False)
    if act == "gelu_tanh":
        return nn.gelu(z, approximate=True)
    if act == "quick_gelu":
        return z * jax.nn.sigmoid(1.702 * z)
    if act == "silu":
        return jax.nn.silu(z)
    raise ValueError(f"unknown activation {act!r}")


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, computed in float32; params ``scale``, ``bias``.

    Same parameters and values as ``flax.linen.LayerNorm`` (two-pass variance).
    Detached, 1/sigma is a constant for the gradient, so the layer is affine in
    its input: ``scale * (x - mean(x)) / sigma + bias``.
    """

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, probe: Probe = NO_PROBE) -> Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
        xf = x.astype(jnp.float32)
        centred = xf - xf.mean(-1, keepdims=True)
        inv = jax.lax.rsqrt((centred * centred).mean(-1, keepdims=True) + self.epsilon)
        if probe.detach:
            inv = jax.lax.stop_gradient(inv)
        return (centred * inv * scale + bias).astype(self.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention that returns its softmax weights beside its output.

    Parameter layout is flax's ``MultiHeadDotProductAttention`` (and so the
    ViT checkpoints'): ``query|key|value/kernel [D, H, D/H]``, ``bias [H, D/H]``,
    ``out/kernel [H, D/H, D]``, ``out/bias [D]``.

    Attributes:
      num_heads: number of heads H; must divide the width D.
      dtype: compute dtype of the projections; the softmax is float32.
      index: the key of this attention in ``Probe.attention_deltas`` (the block
        index; the MAP head's is the depth), None for none.
    """

    num_heads: int
    dtype: Any = jnp.float32
    index: int | None = None

    @nn.compact
    def __call__(
        self, x: Array, kv: Array | None = None, *, probe: Probe = NO_PROBE
    ) -> tuple[Array, Array]:
        """Attention of queries ``x`` [B, Q, D] over ``kv`` [B, K, D] (default: x).

        Args:
          x: queries' inputs [B, Q, D].
          kv: keys' and values' inputs [B, K, D]; None for self-attention.
          probe: ``detach`` holds the weights constant for the gradient; the entry
            ``index`` of ``attention_deltas`` is added to the softmax weights
            [B, H, Q, K] (zeros: its gradient is the gradient with respect to the
            weights); ``attention_fusion`` says what is returned of the weights.

        Returns:
          ``(y [B, Q, D], weights)`` with weights [B, H, Q, K] (every head) or
          [B, Q, K] (head-fused by ``probe.attention_fusion``); unused weights cost
          nothing under ``jit``.
        """
        # What the probe asks of this attention, read in one place.
        detach, delta, fusion = (
            probe.detach,
            probe.attention_delta(self.index),
            probe.attention_fusion,
        )
        kv = x if kv is None else kv
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        head_dim = d // self.num_heads
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            features=(self.num_heads, head_dim),
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            name=name,
        )
        q = dense("query")(x)  # [B, Q, H, Dh]
        k = dense("key")(kv)
        v = dense("value")(kv)
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
        logits = logits.astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1)  # [B, H, Q, K]
        shown = fuse_heads(weights, fusion)
        if detach or delta is not None:
            if detach:
                weights = jax.lax.stop_gradient(weights)
            if delta is not None:
                weights = weights + delta.astype(weights.dtype)
            y = jnp.einsum("...hqk,...khd->...qhd", weights.astype(self.dtype), v)
        else:
            # softmax(l) @ v, normalised after the product: XLA:CPU otherwise fuses a softmax
            # read only by this product into the product's kernel, 1.3-1.7x slower per block
            # (benchmarks/explain.py). Same values to float rounding.
            e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
            y = jnp.einsum("...hqk,...khd->...qhd", e.astype(self.dtype), v)
            y = y / jnp.swapaxes(e.sum(-1), -1, -2)[..., None].astype(self.dtype)
        y = nn.DenseGeneral(
            features=d,
            axis=(-2, -1),
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            name="out",
        )(y)
        return y, shown


class MlpBlock(nn.Module):
    """Transformer MLP ``Dense_0 -> act -> Dense_1``.

    With ``act="swiglu"`` (DINOv2-g), ``Dense_0`` has ``2 * mlp_dim`` outputs
    ``[x1, x2]`` and the hidden is ``silu(x1) * x2``; detached, ``silu(x1)``
    is the constant gate, so the block is linear in ``x2``.
    """

    mlp_dim: int
    dropout: float = 0.0
    act: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool = True, probe: Probe = NO_PROBE) -> Array:
        detach = probe.detach
        d = x.shape[-1]
        init = dict(
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )
        swiglu = self.act == "swiglu"
        h = nn.Dense(self.mlp_dim * (2 if swiglu else 1), dtype=self.dtype, name="Dense_0", **init)(
            x
        )
        if swiglu:
            x1, x2 = jnp.split(h, 2, axis=-1)
            g = jax.nn.silu(x1)
            h = (jax.lax.stop_gradient(g) if detach else g) * x2
        else:
            h = activation(h, self.act, detach)
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = nn.Dense(d, dtype=self.dtype, name="Dense_1", **init)(h)
        return nn.Dropout(self.dropout)(h, deterministic=deterministic)


class MAPHead(nn.Module):
    """Multihead attention pooling (SigLIP; big_vision's ``MAPHead``).

    A learned ``probe`` parameter [1, 1, D] attends over the tokens
    (``MultiHeadDotProductAttention_0``), then ``x + MlpBlock_0(LayerNorm_0(x))``.

    Attributes:
      num_heads: heads of the pooling attention.
      mlp_dim: hidden size of its MLP.
      act: MLP activation.
      layer_norm_eps: epsilon of ``LayerNorm_0``.
    """

    num_heads: int
    mlp_dim: int
    act: str = "gelu_tanh"
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    index: int | None = None

    @nn.compact
    def __call__(self, x: Array, *, probe: Probe = NO_PROBE) -> tuple[Array, Array]:
        """x: [B, N, D] -> (pooled [B, D], the pooling weights [B, H, 1, N] or fused)."""
        b, _, d = x.shape
        query = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), jnp.float32)
        q = jnp.broadcast_to(query.astype(x.dtype), (b, 1, d))
        y, weights = MultiHeadAttention(
            self.num_heads, self.dtype, self.index, name="MultiHeadDotProductAttention_0"
        )(q, x, probe=probe)
        z = LayerNorm(self.layer_norm_eps, self.dtype, name="LayerNorm_0")(y, probe=probe)
        y = y + MlpBlock(self.mlp_dim, act=self.act, dtype=self.dtype, name="MlpBlock_0")(
            z, probe=probe
        )
        return y[:, 0], weights
