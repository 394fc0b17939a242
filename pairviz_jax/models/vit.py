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

The softmax attention of every block is sown into the ``intermediates``
collection. ``sow`` is a no-op unless the caller makes ``intermediates``
mutable, so training and embedding-only inference never keep them alive;
``pairviz_jax.explain.features`` collects them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

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

HEAD_FUSIONS = ("mean", "max", "min")


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


class MultiHeadSelfAttention(nn.Module):
    """Self-attention whose softmax weights are sown as ``attention``.

    Parameter layout is flax's ``MultiHeadDotProductAttention`` (and so the
    ViT checkpoints'): ``query|key|value/kernel [D, H, D/H]``, ``bias [H, D/H]``,
    ``out/kernel [H, D/H, D]``, ``out/bias [D]``.

    Attributes:
      num_heads: number of heads H; must divide the width D.
      dtype: compute dtype of the projections; the softmax is float32.
    """

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, attention_fusion: str | None = None) -> Array:
        """x: [B, N, D] -> [B, N, D]; sows ``attention`` [B, H, N, N] (or [B, N, N] fused)."""
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
        q = dense("query")(x)  # [B, N, H, Dh]
        k = dense("key")(x)
        v = dense("value")(x)
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [B, H, N, N]
        # Kept alive only when the caller asks for `intermediates`.
        self.sow("intermediates", "attention", fuse_heads(weights, attention_fusion))
        y = jnp.einsum("...hqk,...khd->...qhd", weights.astype(self.dtype), v)
        return nn.DenseGeneral(
            features=d,
            axis=(-2, -1),
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            name="out",
        )(y)


class MlpBlock(nn.Module):
    """Transformer MLP: Dense -> exact GELU -> Dense, names ``Dense_0``, ``Dense_1``."""

    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
        d = x.shape[-1]
        init = dict(
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="Dense_0", **init)(x)
        x = nn.gelu(x, approximate=False)  # the reference ViTs use the exact GELU
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        x = nn.Dense(d, dtype=self.dtype, name="Dense_1", **init)(x)
        return nn.Dropout(self.dropout)(x, deterministic=deterministic)


class Encoder1DBlock(nn.Module):
    """Pre-LN Transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, *, deterministic: bool = True, attention_fusion: str | None = None
    ) -> Array:
        assert x.ndim == 3, f"expected tokens [B, N, D], got {x.shape}"
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(x)
        y = MultiHeadSelfAttention(
            num_heads=self.num_heads, dtype=self.dtype, name="MultiHeadDotProductAttention_1"
        )(y, attention_fusion=attention_fusion)
        y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_2")(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="MlpBlock_3")(
            y, deterministic=deterministic
        )
        return x + y


class Encoder(nn.Module):
    """Position embedding, optional class-token drop, ``depth`` blocks, final LayerNorm.

    Named ``Transformer`` inside ``ViT`` as in the original checkpoints.
    """

    depth: int
    mlp_dim: int
    num_heads: int
    num_prefix_in: int = 0
    drop_prefix: bool = False
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, *, deterministic: bool = True, attention_fusion: str | None = None
    ) -> Array:
        x = AddPositionEmbs(name="posembed_input")(x)
        if self.drop_prefix and self.num_prefix_in:
            # The authors' model: the class token receives its position embedding
            # and is then removed, so the encoder sees only the K*K patch tokens.
            x = x[:, self.num_prefix_in :]
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        for i in range(self.depth):
            x = Encoder1DBlock(
                self.mlp_dim, self.num_heads, self.dropout, self.dtype, name=f"encoderblock_{i}"
            )(x, deterministic=deterministic, attention_fusion=attention_fusion)
        return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)


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


class ViT(nn.Module):
    """Vision Transformer for image embedding.

    Attributes:
      patch_size: (ph, pw); image height and width must be multiples of it.
      width: token width D.
      depth: number of blocks L.
      mlp_dim: hidden size of the MLP (default 4 * width).
      num_heads: attention heads H.
      pool_type: ``"gap"`` (the paper, eq. 1: mean of the K*K patch output
        tokens; a kept class token is excluded) or ``"tok"`` (the class token).
      class_token: whether the model has a learned class token (``cls``) with
        its slot in the position embedding.
      keep_class_token: with ``class_token``, keep it in the encoder's sequence
        (True, the usual ViT) or drop it right after adding the position
        embedding (False, the authors' model).
      proj_dim: if set, a linear layer with bias (``head``) maps every output
        token to this size before pooling (the paper: 768 -> 512).
      dropout: dropout rate in training.
      dtype: compute dtype (``jnp.bfloat16`` on accelerators); parameters stay
        float32 and the attention softmax is float32.
    """

    patch_size: Sequence[int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    pool_type: str = "gap"
    class_token: bool = False
    keep_class_token: bool = True
    proj_dim: int | None = None
    dropout: float = 0.0
    dtype: Any = jnp.float32

    # Tells `pairviz_jax.explain` that this family sows attention (rollout applies).
    sows_attention: ClassVar[bool] = True

    def __post_init__(self):
        # A tuple keeps the module hashable (compiled functions are cached per model).
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        super().__post_init__()

    @property
    def num_prefix_tokens(self) -> int:
        """Class tokens in front of the patch tokens of the encoder's output."""
        return int(self.class_token and self.keep_class_token)

    @property
    def embedding_dim(self) -> int:
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
        if self.pool_type not in ("gap", "tok"):
            raise ValueError(f"pool_type must be 'gap' or 'tok', got {self.pool_type!r}")
        if self.pool_type == "tok" and not self.num_prefix_tokens:
            raise ValueError("pool_type='tok' needs class_token=True and keep_class_token=True")
        if len(tuple(self.patch_size)) != 2:
            raise ValueError(f"patch_size must be (ph, pw), got {self.patch_size!r}")

    @nn.compact
    def __call__(
        self,
        images: Array,
        *,
        train: bool = False,
        attention_fusion: str | None = None,
    ) -> tuple[Array, dict[str, Array]]:
        """Embeds images.

        Args:
          images: [B, H, W, C] float, already normalised.
          train: enables dropout (needs a ``dropout`` rng).
          attention_fusion: what is sown as ``attention`` in each block:
            None keeps every head ([B, H, N, N]); ``mean|max|min`` keeps the
            head-fused map ([B, N, N]), 1/H of the memory.

        Returns:
          ``(embedding [B, E], out)`` where ``out`` has ``tokens`` [B, K*K, E]
          (the projected patch output tokens, alpha in eq. 1-4), ``embedding``
          [B, E] (beta, eq. 1, for ``gap``), ``encoded`` [B, N, D] (the encoder
          output incl. any kept class token) and, with a projection,
          ``pre_projection`` [B, D].
        """
        self._check_config()
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        gh, gw = self.grid(images.shape)
        mlp_dim = self.mlp_dim or 4 * self.width
        out: dict[str, Array] = {}

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
        if self.class_token:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
            x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (b, 1, 1)), x], axis=1)

        encoded = Encoder(
            depth=self.depth,
            mlp_dim=mlp_dim,
            num_heads=self.num_heads,
            num_prefix_in=int(self.class_token),
            drop_prefix=not self.keep_class_token,
            dropout=self.dropout,
            dtype=self.dtype,
            name="Transformer",
        )(x, deterministic=not train, attention_fusion=attention_fusion)
        out["encoded"] = encoded

        y = encoded
        if self.proj_dim:
            # Linear with bias on every output token; commutes with the mean pool.
            y = nn.Dense(self.proj_dim, dtype=self.dtype, name="head")(y)
        y = y.astype(jnp.float32)
        p = self.num_prefix_tokens
        out["tokens"] = y[:, p:]  # alpha: [B, K*K, E]
        if self.pool_type == "gap":
            emb = out["tokens"].mean(axis=1)  # beta, eq. 1
        else:
            emb = y[:, 0]
        out["embedding"] = emb
        return emb, out


def collect_attention(intermediates: Mapping[str, Any], depth: int) -> Array:
    """Stacks the sown attention of ``ViT`` blocks 0..depth-1 along a new axis 1.

    Args:
      intermediates: the ``intermediates`` collection returned by ``apply``.
      depth: number of blocks.

    Returns:
      [B, L, H, N, N] (all heads) or [B, L, N, N] (head-fused).
    """
    enc = intermediates["Transformer"]
    maps = [
        enc[f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"]["attention"][0]
        for i in range(depth)
    ]
    return jnp.stack(maps, axis=1)
