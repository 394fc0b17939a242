"""Vision Transformer (ViT) in flax.linen that exposes its attention.

The module is a pure function of its parameters: the same parameters give the
same embedding on CPU, GPU or TPU. Parameter names follow the original ViT /
AugReg checkpoints (``embedding``, ``cls``, ``Transformer/posembed_input``,
``Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1``,
``Transformer/encoder_norm``, ``head``), so public ``.npz`` files load by
renaming at most (see ``pairviz_jax.checkpoints``).

It can be the paper's model (Black et al., WACV 2022, Section 4): ViT-B/16 at
256 px, a class token that exists in the checkpoint but is dropped before the
encoder, every output token projected 768 -> 512 by a linear layer with bias,
then mean-pooled (eq. 1)::

    ViT(**decode_variant("B/16"), class_token=True, keep_class_token=False,
        pool_type="gap", proj_dim=512)

``ViT.__call__(images, *, train=False, probe=None)`` returns ``(embedding, out)``
with what explanations read in ``out``: the output tokens, every block's input and
softmax attention (unused outputs cost nothing under ``jit``). What a method injects
(detached gradients, deltas on block inputs or attention weights) is one ``Probe``
(``models.probe``); ``pairviz_jax.explain`` builds its maps from ``out``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from pairviz_jax.models.layers import (
    ACTIVATIONS,
    HEAD_FUSIONS,
    LayerNorm,
    MAPHead,
    MlpBlock,
    MultiHeadAttention,
    fuse_heads,
)
from pairviz_jax.models.probe import NO_PROBE, Probe

__all__ = [
    "HEAD_FUSIONS",
    "POOL_TYPES",
    "Probe",
    "ViT",
    "decode_variant",
    "fuse_heads",
]

Array = jax.Array

# name -> (width, depth, mlp_dim, num_heads), as big_vision's decode_variant.
_VARIANTS: dict[str, tuple[int, int, int, int]] = {
    # Sizes for tests and smoke runs; not in any paper.
    "mu": (16, 1, 32, 2),
    "Tiny": (32, 2, 64, 2),
    # The standard sizes.
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}


def decode_variant(variant: str) -> dict[str, Any]:
    """Reads ``"{Ti,S,M,B,L,H,...}/{patch}"`` into ViT keyword arguments.

    Args:
      variant: e.g. ``"B/16"``, ``"B/32"``, ``"Ti/8"``, ``"mu/4"`` (a test
        size), or a size without patch (``"S"``).

    Returns:
      ``dict(width=, depth=, mlp_dim=, num_heads=[, patch_size=(p, p)])``.

    Raises:
      ValueError: for an unknown size or a malformed patch.
    """
    if not isinstance(variant, str):
        raise ValueError(f"variant must be a string like 'B/16', got {variant!r}")
    m = re.fullmatch(r"([A-Za-z]+)(?:/(\d+))?", variant.strip())
    if not m or m.group(1) not in _VARIANTS:
        raise ValueError(
            f"unknown ViT variant {variant!r}: expected '<size>/<patch>' with size in "
            f"{sorted(_VARIANTS)} and an integer patch, e.g. 'B/16'"
        )
    width, depth, mlp_dim, num_heads = _VARIANTS[m.group(1)]
    out: dict[str, Any] = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
    if m.group(2) is not None:
        p = int(m.group(2))
        if p <= 0:
            raise ValueError(f"patch size in {variant!r} must be positive")
        out["patch_size"] = (p, p)
    return out


def _check_delta(name: str, delta: Array, shape: Sequence[int]) -> None:
    if tuple(delta.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(delta.shape)}")


class Encoder1DBlock(nn.Module):
    """Pre-LN Transformer block: x + ls1 * MHSA(LN(x)), then x + ls2 * MLP(LN(x)).

    ``ls1``/``ls2`` [D] are the layer scales of DINOv2 / CaiT (only with
    ``layer_scale``). ``index`` is the block's key in ``Probe.attention_deltas``.
    """

    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    layer_scale: float | None = None
    act: str = "gelu"
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    index: int | None = None

    @nn.compact
    def __call__(
        self, x: Array, *, deterministic: bool = True, probe: Probe = NO_PROBE
    ) -> tuple[Array, Array]:
        """x [B, N, D] -> (the block's output [B, N, D], its attention weights)."""
        assert x.ndim == 3, f"expected tokens [B, N, D], got {x.shape}"
        d = x.shape[-1]
        ln = lambda name: LayerNorm(self.layer_norm_eps, self.dtype, name=name)  # noqa: E731
        y = ln("LayerNorm_0")(x, probe=probe)
        y, weights = MultiHeadAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            index=self.index,
            name="MultiHeadDotProductAttention_1",
        )(y, probe=probe)
        y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
        if self.layer_scale is not None:
            init = nn.initializers.constant(self.layer_scale)
            y = y * self.param("ls1", init, (d,), jnp.float32).astype(y.dtype)
        x = x + y
        y = ln("LayerNorm_2")(x, probe=probe)
        y = MlpBlock(self.mlp_dim, self.dropout, self.act, self.dtype, name="MlpBlock_3")(
            y, deterministic=deterministic, probe=probe
        )
        if self.layer_scale is not None:
            init = nn.initializers.constant(self.layer_scale)
            y = y * self.param("ls2", init, (d,), jnp.float32).astype(y.dtype)
        return x + y, weights


class AddPositionEmbs(nn.Module):
    """Adds a learned position embedding ``pos_embedding [1, N, D]``."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.has_variable("params", "pos_embedding"):
            have = self.get_variable("params", "pos_embedding").shape
            if tuple(have[1:]) != tuple(x.shape[1:]):
                raise ValueError(
                    f"the position embedding holds {have[1]} tokens of width {have[2]}, but these "
                    f"images give {x.shape[1]} tokens of width {x.shape[2]}: use the image size "
                    "the parameters were made for, or resample the position embedding when "
                    "loading (pairviz_jax.checkpoints)"
                )
        pe = self.param(
            "pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:], jnp.float32
        )
        return x + pe.astype(x.dtype)


class Encoder(nn.Module):
    """Position embedding, prefix tokens, optional ``ln_pre``, ``depth`` blocks, final LayerNorm.

    Named ``Transformer`` inside ``ViT`` as in the original checkpoints. The
    input of block k (and, as entry ``depth``, the last block's output before
    ``encoder_norm``) is returned beside the output.
    """

    depth: int
    mlp_dim: int
    num_heads: int
    num_prefix_in: int = 0
    drop_prefix: bool = False
    num_registers: int = 0
    ln_pre: bool = False
    layer_scale: float | None = None
    act: str = "gelu"
    layer_norm_eps: float = 1e-6
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, *, deterministic: bool = True, probe: Probe = NO_PROBE
    ) -> tuple[Array, list[Array], Array]:
        """Tokens [B, N, D] -> (normed output, block inputs (L + 1), attention [B, L, ...])."""
        x = AddPositionEmbs(name="posembed_input")(x)
        if self.drop_prefix and self.num_prefix_in:
            # The authors' model: the class token receives its position embedding
            # and is then removed, so the encoder sees only the K*K patch tokens.
            x = x[:, self.num_prefix_in :]
        if self.num_registers:
            # DINOv2 registers: after the class token, no position embedding.
            reg = self.param(
                "reg", nn.initializers.normal(1e-6), (1, self.num_registers, x.shape[-1])
            )
            reg = jnp.broadcast_to(reg.astype(x.dtype), (x.shape[0],) + reg.shape[1:])
            p = self.num_prefix_in
            x = jnp.concatenate([x[:, :p], reg, x[:, p:]], axis=1)
        if self.ln_pre:
            x = LayerNorm(self.layer_norm_eps, self.dtype, name="ln_pre")(x, probe=probe)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        block_inputs, attention = [], []
        for i in range(self.depth + 1):
            delta = probe.block_delta(i)
            if delta is not None:
                _check_delta(f"block_deltas[{i}]", delta, x.shape)
                x = x + delta.astype(x.dtype)
            block_inputs.append(x)
            if i == self.depth:
                break
            x, weights = Encoder1DBlock(
                self.mlp_dim,
                self.num_heads,
                self.dropout,
                self.layer_scale,
                self.act,
                self.layer_norm_eps,
                self.dtype,
                index=i,
                name=f"encoderblock_{i}",
            )(x, deterministic=deterministic, probe=probe)
            attention.append(weights)
        normed = LayerNorm(self.layer_norm_eps, self.dtype, name="encoder_norm")(x, probe=probe)
        # Every block's input and the last output before the norm, and every block's
        # attention; dropped by the compiler when unused.
        return normed, block_inputs, jnp.stack(attention, axis=1)


POOL_TYPES = ("gap", "tok", "gap_tok", "map")


class ViT(nn.Module):
    """Vision Transformer for image embedding.

    The sequence is ``[cls, dist, registers..., patches]`` (each present or
    not); the position embedding covers the class and distillation tokens and
    the patches, not the registers (DINOv2).

    Attributes:
      patch_size: (ph, pw); image height and width must be multiples of it.
      width: token width D.
      depth: number of blocks L.
      mlp_dim: hidden size of the MLP (default 4 * width; for ``swiglu`` the
        size of ``silu(x1) * x2``).
      num_heads: attention heads H.
      pool_type: ``"gap"`` (the paper, eq. 1: mean of the K*K patch output
        tokens; class, distillation and register tokens excluded), ``"tok"``
        (the class token; with a distillation token the mean of the two, as
        DeiT), ``"gap_tok"`` (``[class token, mean of patches]``
        concatenated, DINOv2's linear-probe feature) or ``"map"`` (SigLIP's
        attention-pooling head ``MAPHead_0``).
      class_token: whether the model has a learned class token (``cls``) with
        its slot in the position embedding.
      keep_class_token: with ``class_token``, keep it in the encoder's sequence
        (True, the usual ViT) or drop it right after adding the position
        embedding (False, the authors' model).
      distill_token: a DeiT distillation token (``dist``), after ``cls``.
      num_registers: DINOv2 register tokens (``Transformer/reg``), kept
        through the encoder, excluded from pooling and from patch maps.
      layer_scale: initial value of per-block layer scales ``ls1``/``ls2``
        (DINOv2); None for none.
      mlp_act: ``gelu`` (exact), ``gelu_tanh`` (SigLIP), ``quick_gelu``
        (OpenAI CLIP) or ``swiglu`` (DINOv2-g).
      ln_pre: a LayerNorm ``Transformer/ln_pre`` before the blocks (CLIP).
      layer_norm_eps: epsilon of every LayerNorm (1e-6; CLIP 1e-5).
      proj_dim: if set, a linear layer (``head``) maps every output token
        (``gap``/``tok``) or the pooled vector (``map``) to this size (the
        paper: 768 -> 512 with bias; CLIP: no bias).
      proj_bias: whether ``head`` has a bias.
      dropout: dropout rate in training.
      dtype: compute dtype (``jnp.bfloat16`` on accelerators); parameters stay
        float32, LayerNorm and the attention softmax are float32.
    """

    patch_size: Sequence[int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    pool_type: str = "gap"
    class_token: bool = False
    keep_class_token: bool = True
    distill_token: bool = False
    num_registers: int = 0
    layer_scale: float | None = None
    mlp_act: str = "gelu"
    ln_pre: bool = False
    layer_norm_eps: float = 1e-6
    proj_dim: int | None = None
    proj_bias: bool = True
    dropout: float = 0.0
    dtype: Any = jnp.float32

    # Tells `pairviz_jax.explain` that this family has attention (rollout applies).
    has_attention: ClassVar[bool] = True

    def __post_init__(self):
        # A tuple keeps the module hashable (compiled functions are cached per model).
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        super().__post_init__()

    @property
    def num_class_tokens(self) -> int:
        """Class and distillation tokens at the front of the encoder's sequence."""
        return int(self.class_token and self.keep_class_token) + int(self.distill_token)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens in front of the patch tokens of the encoder's output (class, dist, registers)."""
        return self.num_class_tokens + self.num_registers

    @property
    def embedding_dim(self) -> int:
        if self.pool_type == "gap_tok":
            return 2 * self.width
        return self.proj_dim or self.width

    def grid(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """The token grid (gh, gw) for images of shape [..., H, W, C]."""
        h, w = image_shape[-3], image_shape[-2]
        ph, pw = self.patch_size
        if h < ph or w < pw or h % ph or w % pw:
            raise ValueError(
                f"image size {h}x{w} must be a positive multiple of the patch size {ph}x{pw}"
            )
        return h // ph, w // pw

    def _check_config(self) -> None:
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"pool_type must be one of {POOL_TYPES}, got {self.pool_type!r}")
        if self.pool_type in ("tok", "gap_tok") and not self.num_class_tokens:
            raise ValueError(
                f"pool_type={self.pool_type!r} needs class_token=True and keep_class_token=True"
            )
        if self.pool_type == "gap_tok" and self.proj_dim:
            raise ValueError("pool_type='gap_tok' concatenates two width-D features; no proj_dim")
        if not self.keep_class_token and (self.distill_token or self.num_registers):
            raise ValueError("keep_class_token=False cannot be combined with dist/register tokens")
        if self.mlp_act not in ACTIVATIONS:
            raise ValueError(f"mlp_act must be one of {ACTIVATIONS}, got {self.mlp_act!r}")
        if len(tuple(self.patch_size)) != 2:
            raise ValueError(f"patch_size must be (ph, pw), got {self.patch_size!r}")

    def _tokens(self, images: Array) -> tuple[Array, int]:
        """Patch embedding and prefix tokens: ([B, P + K*K, D], P)."""
        gh, gw = self.grid(images.shape)
        x = nn.Conv(
            self.width,
            tuple(self.patch_size),
            strides=tuple(self.patch_size),
            padding="VALID",
            dtype=self.dtype,
            name="embedding",
        )(images.astype(self.dtype))
        b = x.shape[0]
        x = x.reshape(b, gh * gw, self.width)
        prefix = []
        if self.class_token:
            prefix.append(self.param("cls", nn.initializers.zeros, (1, 1, self.width), jnp.float32))
        if self.distill_token:
            prefix.append(
                self.param("dist", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
            )
        if prefix:
            prefix = [jnp.broadcast_to(t.astype(x.dtype), (b, 1, self.width)) for t in prefix]
            x = jnp.concatenate([*prefix, x], axis=1)
        return x, len(prefix)

    def _pool(self, encoded: Array, mlp_dim: int, probe: Probe, out: dict[str, Any]) -> Array:
        """The embedding [B, E] from the encoder's output; fills ``out["tokens"]``."""
        p, c = self.num_prefix_tokens, self.num_class_tokens
        head = lambda y: nn.Dense(  # noqa: E731
            self.proj_dim, use_bias=self.proj_bias, dtype=self.dtype, name="head"
        )(y)
        if self.pool_type == "map":
            pooled, out["pool_attention"] = MAPHead(
                self.num_heads,
                mlp_dim,
                act=self.mlp_act,
                layer_norm_eps=self.layer_norm_eps,
                dtype=self.dtype,
                index=self.depth,
                name="MAPHead_0",
            )(encoded, probe=probe)
            out["tokens"] = encoded[:, p:].astype(jnp.float32)
            return (head(pooled) if self.proj_dim else pooled).astype(jnp.float32)
        # Linear (with bias) on every output token commutes with the mean pool.
        y = (head(encoded) if self.proj_dim else encoded).astype(jnp.float32)
        out["tokens"] = y[:, p:]  # alpha: [B, K*K, E]
        gap = out["tokens"].mean(axis=1)  # beta, eq. 1
        tok = y[:, :c].mean(axis=1) if c else None  # class (and distillation) token
        if self.pool_type == "gap_tok":
            return jnp.concatenate([tok, gap], axis=-1)
        return {"gap": gap, "tok": tok}[self.pool_type]

    @nn.compact
    def __call__(
        self, images: Array, *, train: bool = False, probe: Probe | None = None
    ) -> tuple[Array, dict[str, Any]]:
        """Embeds images.

        Args:
          images: [B, H, W, C] float, already normalised.
          train: enables dropout (needs a ``dropout`` rng).
          probe: what an explanation method injects (``models.Probe``: detached
            gradients, deltas on block inputs or attention weights, the head
            fusion of ``out["attention"]``); None for the plain forward pass.

        Returns:
          ``(embedding [B, E], out)`` where ``out`` has ``tokens`` [B, K*K, E']
          (the patch output tokens, projected for ``gap``/``tok``: alpha in
          eq. 1-4), ``embedding`` [B, E] (beta), ``encoded`` [B, N', D] (the
          encoder output incl. prefix tokens), ``block_inputs`` (the input of
          every block and the last block's output before ``encoder_norm``,
          [B, N', D] each, L + 1), ``attention`` [B, L, H, N', N'] (or
          [B, L, N', N'] head-fused by ``probe.attention_fusion``) and, for
          ``map`` pooling, ``pool_attention`` [B, H, 1, N'] (or fused).
        """
        probe = NO_PROBE if probe is None else probe
        self._check_config()
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        mlp_dim = self.mlp_dim or 4 * self.width
        x, num_prefix = self._tokens(images)
        encoded, block_inputs, attention = Encoder(
            depth=self.depth,
            mlp_dim=mlp_dim,
            num_heads=self.num_heads,
            num_prefix_in=num_prefix,
            drop_prefix=not self.keep_class_token,
            num_registers=self.num_registers,
            ln_pre=self.ln_pre,
            layer_scale=self.layer_scale,
            act=self.mlp_act,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout,
            dtype=self.dtype,
            name="Transformer",
        )(x, deterministic=not train, probe=probe)
        out: dict[str, Any] = {
            "encoded": encoded,
            "block_inputs": block_inputs,
            "attention": attention,
        }
        out["embedding"] = self._pool(encoded, mlp_dim, probe, out)
        return out["embedding"], out
