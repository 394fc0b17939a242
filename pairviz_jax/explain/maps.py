"""From a model and images to what the paper's method needs (paper, Section 3.3).

``forward`` runs one forward pass per image and keeps what the explanation needs
(output tokens alpha, embedding beta, per-block attention) as ``Features``;
``features`` is its compiled form, ``embed`` the embedding alone. The maps of any
method, the paper's included, come from ``explain.paired_maps`` / ``cross_maps``.

Models are duck-typed: ``apply(variables, images, probe=...)`` returns
``(embedding [B, E], out)`` with ``out["tokens"] [B, N, E]`` (and, for a ViT,
``out["attention"]`` and ``out["block_inputs"]``); ``model.grid(shape)`` gives the
token grid; a ClassVar ``has_attention`` says whether the model has attention
(``ViT``) or not (a CNN, whose maps are eq. 4 without rollout, as Stylianou et al.
2019).

Every pooling gets paired maps: the cosine splits over per-token contributions
``gamma_j = v_j . u_partner / |beta|`` (eq. 4 for ``gap``; the exact linear
split of ``explain.decompose`` for class-token, MAP and ``gap_tok`` pooling),
plus a remainder ``rest . u_partner / |beta|`` that no token is credited with
(zero for ``gap``); each part is redistributed to the patches by the rollout of
the blocks below its level (eq. 5-6).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from pairviz_jax.explain._checks import check_finite, check_rank, square_grid
from pairviz_jax.explain.decompose import decompose_embedding
from pairviz_jax.explain.rollout import part_matrix, rollout
from pairviz_jax.models.layers import HEAD_FUSIONS
from pairviz_jax.models.probe import Probe

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Images with their model: what ``explain.cross_maps`` takes for any method.

    Attributes:
      model: a ``ViT`` (or another pairviz_jax model).
      variables: its variables.
      images: [B, H, W, C] normalised.
    """

    model: Any
    variables: Any
    images: Array


@flax.struct.dataclass
class Features:
    """What one forward pass gives the explanation, for a batch of B images.

    Attributes:
      embedding: beta, [B, E] (eq. 1), not normalised.
      tokens: alpha, [B, N, E], N = gh * gw patch output tokens (projected).
      attention: [B, L, H, N', N'] (all heads), [B, L, N', N'] (head-fused, see
        ``head_fusion``), or None for models without attention. N' = P + N
        with P kept prefix (class) tokens.
      grid: (gh, gw), static.
      head_fusion: the fusion already applied in the model, or None.
      pool_type: the model's pooling (``gap``, ``tok``, ``gap_tok``, ``map``), static.
      parts: for pooling other than ``gap``, ``{level: v [B, N', E]}``: the
        embedding split over the N' tokens at the input of block ``level``
        (``explain.decompose``); None for ``gap`` (then the split
        is eq. 4, built from ``tokens``).
      rest: [B, E], the part of the embedding no token is credited with
        (None for ``gap``: zero).
    """

    embedding: Array
    tokens: Array
    attention: Array | None
    grid: tuple[int, int] = flax.struct.field(pytree_node=False)
    head_fusion: str | None = flax.struct.field(pytree_node=False, default=None)
    pool_type: str = flax.struct.field(pytree_node=False, default="gap")
    parts: dict[int, Array] | None = None
    rest: Array | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __len__(self) -> int:
        return self.embedding.shape[0]

    def slice(self, start: int, stop: int) -> Features:
        """Images start..stop-1 (host-side helper for chunked jobs)."""
        return jax.tree_util.tree_map(lambda x: x[start:stop], self)

    def rollout(self, start_layer: int = 0, head_fusion: str = "mean") -> Array | None:
        """R [B, N', N'] (eq. 5), or None for a model without attention."""
        if self.attention is None:
            return None
        fusion = None if self.head_fusion else head_fusion
        return rollout(self.attention, head_fusion=fusion, start_layer=start_layer)

    @property
    def num_prefix(self) -> int:
        """P, the class/distillation/register tokens in front of the N patch tokens."""
        if self.attention is None:
            return 0
        return self.attention.shape[-1] - self.tokens.shape[-2]

    def contributions(self) -> tuple[dict[int, Array], Array]:
        """``({level: v [B, N', E]}, rest [B, E])``: the embedding split over tokens.

        ``sum(v.sum(1)) + rest == embedding``. For ``gap`` this is eq. 4
        without the partner: ``v = alpha / N`` on the patch tokens at the
        output level L, zero on prefix tokens, ``rest = 0``.
        """
        if self.parts is not None:
            return self.parts, self.rest
        alpha = self.tokens.astype(jnp.float32)
        b, n, e = alpha.shape
        level = self.attention.shape[1] if self.attention is not None else 0
        v = jnp.concatenate([jnp.zeros((b, self.num_prefix, e), jnp.float32), alpha / n], axis=1)
        return {level: v}, jnp.zeros((b, e), jnp.float32)

    def with_parts(self) -> Features:
        """The same features with ``parts`` and ``rest`` filled in (also for ``gap``)."""
        parts, rest = self.contributions()
        return self.replace(parts=parts, rest=rest)

    def part_matrices(
        self, convention: str, start_layer: int = 0, head_fusion: str = "mean"
    ) -> dict[int, Array | None]:
        """``{level: M [B, N, N']}`` (eq. 5-6) for each level of ``contributions``."""
        parts, _ = self.contributions()
        fusion = None if self.head_fusion else head_fusion
        n = self.tokens.shape[-2]
        return {
            k: part_matrix(
                self.attention, k, n, convention, start_layer=start_layer, head_fusion=fusion
            )
            for k in parts
        }


def check_model(model, images, name: str = "images") -> tuple[int, int]:
    """The token grid of ``images`` [B, H, W, C]; ValueError for a non-model or bad rank."""
    if not hasattr(model, "apply") or not hasattr(model, "grid"):
        raise ValueError(
            f"model must be a pairviz_jax model (ViT or ResNet) with apply() and grid(), "
            f"got {type(model).__name__}"
        )
    check_rank(name, images, 4, "[B, H, W, C]")
    if images.ndim != 4:
        raise ValueError(f"{name} must be [B, H, W, C], got shape {images.shape}")
    return model.grid(images.shape)


def forward(model, variables, images: Array, head_fusion: str | None = None) -> Features:
    """One forward pass over [B, H, W, C] (traceable; ``features`` is its compiled form).

    The attention is head-fused inside the model (``Probe.attention_fusion``); for a
    pooling other than ``gap`` the embedding's split over tokens is computed from the
    forward's outputs (``explain.decompose``).
    """
    has_attention = getattr(model, "has_attention", False)
    probe = Probe(attention_fusion=head_fusion) if has_attention else None
    emb, out = model.apply(variables, images, probe=probe)
    attention = out.get("attention") if has_attention else None
    pool = getattr(model, "pool_type", "gap")
    parts = rest = None
    if pool != "gap":
        parts, rest = decompose_embedding(model, variables["params"], out)
    return Features(
        embedding=emb.astype(jnp.float32),
        tokens=out["tokens"].astype(jnp.float32),
        attention=attention,
        grid=model.grid(images.shape),
        head_fusion=head_fusion if attention is not None else None,
        pool_type=pool,
        parts=parts,
        rest=rest,
    )


@functools.lru_cache(maxsize=64)
def _features_fn(model, head_fusion):
    return jax.jit(lambda variables, images: forward(model, variables, images, head_fusion))


def features(model, variables, images: Array, *, head_fusion: str | None = None) -> Features:
    """One forward pass per image, keeping tokens, embedding and attention.

    Args:
      model: a ``ViT`` (or another pairviz_jax model).
      variables: its variables (``{"params": ...}``).
      images: [B, H, W, C], normalised.
      head_fusion: None keeps all heads (``attention [B, L, H, N, N]``;
        ViT-B/16 at 256 px: ~38 MB per image); ``mean|max|min`` fuses them
        inside the model (``[B, L, N, N]``, 1/H of the memory).

    Returns:
      ``Features`` (a pytree; ``f.embedding`` / ``f["embedding"]``).
    """
    if head_fusion is not None and head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS} or None, got {head_fusion!r}")
    check_model(model, images)
    check_finite("images", images)
    return _features_fn(model, head_fusion)(variables, images)


@functools.lru_cache(maxsize=16)
def _embed_fn(model):
    return jax.jit(lambda v, x: model.apply(v, x)[0].astype(jnp.float32))


def embed(model, variables, images: Array) -> Array:
    """The embeddings [B, E] (float32) of images [B, H, W, C]: the plain forward pass,
    one compiled function per model (the one embed helper of the package).

    The attention normalises after its product with the values
    (``pairviz_jax.models.layers.MultiHeadAttention``), which keeps XLA:CPU's fusion of
    the softmax off its slow path (``benchmarks/explain.py`` counts the fused kernels: 0).
    """
    return _embed_fn(model)(variables, images)


def to_grid(maps: Array, grid: Sequence[int] | None = None) -> Array:
    """Reshapes token maps [..., N] to the token grid [..., gh, gw].

    Args:
      maps: [..., N].
      grid: (gh, gw) with gh * gw = N; default a square K x K grid.

    Raises:
      ValueError: if N is not a square (and no grid is given) or gh * gw != N.
    """
    check_rank("maps", maps, 1, "[..., N]")
    n = maps.shape[-1]
    gh, gw = square_grid(n, "maps") if grid is None else tuple(int(g) for g in grid)
    if gh * gw != n:
        raise ValueError(f"grid {gh}x{gw} does not hold the {n} tokens of maps")
    return maps.reshape(*maps.shape[:-1], gh, gw)


def upsample(maps: Array, size: Sequence[int]) -> Array:
    """Bicubic upsampling of token-grid maps to pixels, as OpenCV ``INTER_CUBIC``.

    Keys' cubic kernel with a = -0.75, half-pixel centres, replicated border,
    no antialiasing (matches the authors' ``cv2.resize``; a = -0.5 would be
    softer).

    Args:
      maps: [..., gh, gw].
      size: (H, W).

    Returns:
      [..., H, W] float32.
    """
    check_rank("maps", maps, 2, "[..., gh, gw]")
    shape = tuple(maps.shape[:-2]) + tuple(int(s) for s in size)
    return jax.image.resize(
        maps.astype(jnp.float32), shape, method="cubic-pytorch", antialias=False
    )
