"""BiT ResNet-v2 in flax.linen with the authors' per-location embedding head.

The CNN baseline of the paper (Black et al., WACV 2022, Section 5): a Big
Transfer (BiT, Kolesnikov et al. 2020) pre-activation ResNet-v2 with
weight-standardised convolutions and GroupNorm, followed by the authors' head:
GroupNorm -> ReLU -> a 1x1 convolution with bias to the embedding size at
every location of the final feature map, then an average pool. The final
feature map is the token grid for ``pairviz_jax.explain``; there is no
attention, so maps follow Stylianou et al. (2019) without rollout::

    ResNet(**decode_resnet("R101x1"), proj_dim=512)

Parameter names follow the BiT ``.npz`` release (``root_block``,
``block{i}/unit{jj}/{a,b,c}/standardized_conv2d``, ``a/proj``, ``group_norm``,
``head/conv2d``), flax-style ``scale``/``bias`` for GroupNorm, so BiT weights
load by renaming ``gamma``/``beta`` (see ``pairviz_jax.checkpoints``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from pairviz_jax.models.probe import Probe

Array = jax.Array

# Units per stage, as BiT.
BLOCK_SIZES: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def decode_resnet(variant: str) -> dict[str, Any]:
    """Reads ``"R{50,101,152}x{wf}"`` (BiT names) into ResNet keyword arguments.

    Args:
      variant: e.g. ``"R101x1"`` (the paper's baseline) or ``"R50x3"``.

    Returns:
      ``dict(block_sizes=(...), width=64 * wf)``.

    Raises:
      ValueError: for an unknown depth or a malformed name.
    """
    m = re.fullmatch(r"[Rr](\d+)x(\d+)", str(variant).strip())
    if not m or int(m.group(1)) not in BLOCK_SIZES or int(m.group(2)) < 1:
        raise ValueError(
            f"unknown ResNet variant {variant!r}: expected 'R<depth>x<width factor>' with depth "
            f"in {sorted(BLOCK_SIZES)}, e.g. 'R101x1'"
        )
    return dict(block_sizes=BLOCK_SIZES[int(m.group(1))], width=64 * int(m.group(2)))


def _down(n: int) -> int:
    """Output size of a stride-2 step that pads to keep ``ceil(n / 2)``."""
    return (n - 1) // 2 + 1


class StdConv(nn.Module):
    """Weight-standardised convolution (BiT): ``w' = (w - mean) / sqrt(var + eps)``.

    Mean and (biased) variance are taken per output channel over [kh, kw, Cin].

    Attributes:
      features: output channels.
      kernel_size: square kernel size k.
      strides: square stride.
      eps: added to the variance (1e-10 in BiT and the authors' code; timm
        uses 1e-8 for BiT, a difference far below the 1e-4 parity tolerance).
      dtype: compute dtype.
    """

    features: int
    kernel_size: int
    strides: int = 1
    eps: float = 1e-10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: [B, H, W, Cin] -> [B, H', W', features]; symmetric padding k // 2."""
        k = self.kernel_size
        w = self.param(
            "kernel",
            nn.initializers.he_normal(),
            (k, k, x.shape[-1], self.features),
            jnp.float32,
        )
        mean = w.mean(axis=(0, 1, 2), keepdims=True)
        var = jnp.square(w - mean).mean(axis=(0, 1, 2), keepdims=True)
        w = (w - mean) * jax.lax.rsqrt(var + self.eps)
        p = k // 2
        return jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            w.astype(self.dtype),
            window_strides=(self.strides, self.strides),
            padding=((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class _Conv(nn.Module):
    """Holds one ``StdConv`` as ``standardized_conv2d`` (the BiT name)."""

    features: int
    kernel_size: int
    strides: int = 1
    std_eps: float = 1e-10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return StdConv(
            self.features,
            self.kernel_size,
            self.strides,
            self.std_eps,
            self.dtype,
            name="standardized_conv2d",
        )(x)


class _PreActConv(nn.Module):
    """GroupNorm -> ReLU -> StdConv (one of BiT's ``a``, ``b``, ``c``).

    With ``proj_features`` it also returns the projection shortcut ``proj``
    (a strided 1x1 StdConv of the pre-activation, as BiT).
    """

    features: int
    kernel_size: int
    strides: int = 1
    proj_features: int | None = None
    proj_strides: int = 1
    num_groups: int = 32
    gn_eps: float = 1e-5
    std_eps: float = 1e-10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array | None]:
        y = nn.GroupNorm(
            num_groups=self.num_groups,
            epsilon=self.gn_eps,
            use_fast_variance=False,
            dtype=self.dtype,
            name="group_norm",
        )(x)
        y = nn.relu(y)
        shortcut = None
        if self.proj_features is not None:
            shortcut = _Conv(
                self.proj_features, 1, self.proj_strides, self.std_eps, self.dtype, name="proj"
            )(y)
        y = StdConv(
            self.features,
            self.kernel_size,
            self.strides,
            self.std_eps,
            self.dtype,
            name="standardized_conv2d",
        )(y)
        return y, shortcut


class PreActBottleneck(nn.Module):
    """BiT unit: pre-activation bottleneck with the stride on the 3x3 conv.

    Attributes:
      features: output channels (4x the bottleneck width).
      strides: stride of the unit (on ``b`` and the projection).
      num_groups: GroupNorm groups.
      gn_eps: GroupNorm epsilon (1e-5, as BiT and PyTorch).
      std_eps: weight-standardisation epsilon.
      dtype: compute dtype.
    """

    features: int
    strides: int = 1
    num_groups: int = 32
    gn_eps: float = 1e-5
    std_eps: float = 1e-10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: [B, H, W, Cin] -> [B, H / stride, W / stride, features]."""
        mid = self.features // 4
        needs_proj = self.strides != 1 or x.shape[-1] != self.features
        common = dict(num_groups=self.num_groups, gn_eps=self.gn_eps, std_eps=self.std_eps)
        y, shortcut = _PreActConv(
            mid,
            1,
            proj_features=self.features if needs_proj else None,
            proj_strides=self.strides,
            dtype=self.dtype,
            name="a",
            **common,
        )(x)
        y, _ = _PreActConv(mid, 3, self.strides, dtype=self.dtype, name="b", **common)(y)
        y, _ = _PreActConv(self.features, 1, dtype=self.dtype, name="c", **common)(y)
        return y + (x if shortcut is None else shortcut)


class _Root(nn.Module):
    """BiT stem: 7x7/2 StdConv, zero pad 1, 3x3/2 max pool without padding."""

    width: int
    std_eps: float = 1e-10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = StdConv(self.width, 7, 2, self.std_eps, self.dtype, name="standardized_conv2d")(x)
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Stage(nn.Module):
    """One BiT stage ``block{s}``: units ``unit01..`` whose first unit strides."""

    units: int
    features: int
    strides: int
    num_groups: int = 32
    gn_eps: float = 1e-5
    std_eps: float = 1e-10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: [B, H, W, Cin] -> [B, H / strides, W / strides, features]."""
        for u in range(self.units):
            x = PreActBottleneck(
                self.features,
                self.strides if u == 0 else 1,
                self.num_groups,
                self.gn_eps,
                self.std_eps,
                self.dtype,
                name=f"unit{u + 1:02d}",
            )(x)
        return x


class _Head(nn.Module):
    """The authors' head: a 1x1 convolution with bias, ``conv2d``, at every location."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Conv(
            self.features,
            (1, 1),
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            name="conv2d",
        )(x)


class ResNet(nn.Module):
    """BiT ResNet-v2 embedding model with a per-location projection head.

    Attributes:
      block_sizes: units per stage, e.g. (3, 4, 23, 3) for ResNet-101.
      width: stem width, 64 * width factor; stage s has 4 * width * 2**s
        output channels.
      num_groups: GroupNorm groups (32 in BiT).
      proj_dim: embedding size E of the 1x1 head (the paper: 512); None
        keeps the 4 * width * 8 backbone features as tokens.
      gn_eps: GroupNorm epsilon.
      std_eps: weight-standardisation epsilon.
      dtype: compute dtype; parameters stay float32, outputs are float32.
    """

    block_sizes: Sequence[int] = BLOCK_SIZES[101]
    width: int = 64
    num_groups: int = 32
    proj_dim: int | None = 512
    gn_eps: float = 1e-5
    std_eps: float = 1e-10
    dtype: Any = jnp.float32

    # Tells `pairviz_jax.explain` there is no attention: no rollout (Stylianou et al. 2019).
    has_attention: ClassVar[bool] = False

    @property
    def embedding_dim(self) -> int:
        return self.proj_dim or 4 * self.width * 2 ** (len(self.block_sizes) - 1)

    def grid(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """The final feature-map size (h, w) for images of shape [..., H, W, C]."""
        h, w = int(image_shape[-3]), int(image_shape[-2])
        if h < 1 or w < 1:
            raise ValueError(f"image size {h}x{w} must be positive")
        # Stem conv and max pool halve twice; every stage after the first halves once.
        for _ in range(2 + len(self.block_sizes) - 1):
            h, w = _down(h), _down(w)
        return h, w

    @nn.compact
    def __call__(
        self, images: Array, *, train: bool = False, probe: Probe | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Embeds images.

        Args:
          images: [B, H, W, C] float, already normalised.
          train: unused (no dropout or batch statistics); kept for the common
            model interface.
          probe: the common interface's ``models.Probe``; a CNN has no attention
            and no blocks to probe, so only the plain probe (or its head fusion,
            which has nothing to fuse) is accepted.

        Returns:
          ``(embedding [B, E], out)`` where ``out`` has ``features``
          [B, h, w, C] (after the final GroupNorm and ReLU), ``tokens``
          [B, h*w, E] (the head applied at every location, alpha of the
          Stylianou et al. map) and ``embedding`` [B, E] (their mean).
        """
        del train
        if probe is not None and not probe.is_plain:
            raise ValueError(
                "ResNet takes no probe with detach or deltas (no attention, no transformer "
                "blocks): use an explanation method that runs on CNNs ('paper' or 'ig')"
            )
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        out: dict[str, Array] = {}
        common = dict(num_groups=self.num_groups, gn_eps=self.gn_eps, std_eps=self.std_eps)
        x = _Root(self.width, self.std_eps, self.dtype, name="root_block")(images)
        for s, units in enumerate(self.block_sizes):
            x = _Stage(
                units,
                4 * self.width * 2**s,
                1 if s == 0 else 2,
                dtype=self.dtype,
                name=f"block{s + 1}",
                **common,
            )(x)
        x = nn.GroupNorm(
            num_groups=self.num_groups,
            epsilon=self.gn_eps,
            use_fast_variance=False,
            dtype=self.dtype,
            name="group_norm",
        )(x)
        x = nn.relu(x)
        out["features"] = x.astype(jnp.float32)
        if self.proj_dim:
            x = _Head(self.proj_dim, self.dtype, name="head")(x)
        b, h, w, e = x.shape
        out["tokens"] = x.astype(jnp.float32).reshape(b, h * w, e)
        out["embedding"] = out["tokens"].mean(axis=1)
        return out["embedding"], out
