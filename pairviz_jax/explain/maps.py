"""From a model and images to paired similarity maps (paper, Section 3.3).

``features`` runs one forward pass per image and keeps what the explanation
needs (output tokens alpha, embedding beta, per-block attention).
``paired_maps`` is the whole method for a batch of pairs: one compiled
function, the per-pair math ``vmap``-ped over the pairs.

Models are duck-typed: ``apply(variables, images, ...)`` returns
``(embedding [B, E], out)`` with ``out["tokens"] [B, N, E]``; ``model.grid(shape)``
gives the token grid; a ClassVar ``sows_attention`` says whether the model sows
attention (``ViT``) or not (a CNN, whose maps are eq. 4 without rollout, as
Stylianou et al. 2019). A model whose ``pool_type`` is not ``"gap"`` must
accept ``decompose=True`` and return ``out["parts"]`` and ``out["rest"]``,
its embedding split over tokens (``pairviz_jax.models.decompose``).

Every pooling gets paired maps: the cosine splits over per-token contributions
``gamma_j = v_j . u_partner / |beta|`` (eq. 4 for ``gap``; the exact linear
split of ``pairviz_jax.models.decompose`` for class-token, MAP and
``gap_tok`` pooling), plus a remainder ``rest . u_partner / |beta|`` that no
token is credited with (zero for ``gap``); each part is redistributed to the
patches by the rollout of the blocks below its level (eq. 5-6).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import traverse_util

from pairviz_jax.explain._checks import check_finite, check_rank, square_grid
from pairviz_jax.explain.rollout import CONVENTIONS, part_matrix, rollout
from pairviz_jax.explain.similarity import cosine, safe_norm
from pairviz_jax.models.vit import HEAD_FUSIONS

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST


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
        (``pairviz_jax.models.decompose``); None for ``gap`` (then the split
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


def _natural_key(path: tuple[str, ...]) -> list:
    return [int(t) if t.isdigit() else t for p in path for t in re.split(r"(\d+)", p)]


def _collect_attention(intermediates) -> Array | None:
    """Stacks every sown ``attention`` leaf in block order: [B, L, ...]."""
    flat = traverse_util.flatten_dict(dict(intermediates))
    items = sorted(
        ((k[:-1], v) for k, v in flat.items() if k[-1] == "attention"),
        key=lambda kv: _natural_key(kv[0]),
    )
    if not items:
        return None
    maps = [v[0] if isinstance(v, tuple) else v for _, v in items]
    return jnp.stack(maps, axis=1)


def _check_model(model, images, name: str = "images") -> tuple[int, int]:
    if not hasattr(model, "apply") or not hasattr(model, "grid"):
        raise ValueError(
            f"model must be a pairviz_jax model (ViT or ResNet) with apply() and grid(), "
            f"got {type(model).__name__}"
        )
    check_rank(name, images, 4, "[B, H, W, C]")
    if images.ndim != 4:
        raise ValueError(f"{name} must be [B, H, W, C], got shape {images.shape}")
    return model.grid(images.shape)


def _forward(model, variables, images, head_fusion: str | None) -> Features:
    """Traced body of ``features``: one forward pass over [B, H, W, C]."""
    kwargs = {}
    if getattr(model, "sows_attention", False):
        kwargs["attention_fusion"] = head_fusion
    pool = getattr(model, "pool_type", "gap")
    if pool != "gap":
        kwargs["decompose"] = True
    (emb, out), state = model.apply(variables, images, mutable=["intermediates"], **kwargs)
    attention = _collect_attention(state.get("intermediates", {}))
    return Features(
        embedding=emb.astype(jnp.float32),
        tokens=out["tokens"].astype(jnp.float32),
        attention=attention,
        grid=model.grid(images.shape),
        head_fusion=head_fusion if attention is not None else None,
        pool_type=pool,
        parts=out.get("parts"),
        rest=out.get("rest"),
    )


@functools.lru_cache(maxsize=64)
def _features_fn(model, head_fusion):
    return jax.jit(lambda variables, images: _forward(model, variables, images, head_fusion))


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
    _check_model(model, images)
    check_finite("images", images)
    return _features_fn(model, head_fusion)(variables, images)


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


def _side_map(parts, rest, emb, mats, unit_partner, grid) -> tuple[Array, Array]:
    """One image against a partner's unit embedding: (map [gh, gw], unassigned share [])."""
    norm = safe_norm(emb)
    total = 0.0
    for k, v in parts.items():
        gamma = jnp.einsum("te,e->t", v, unit_partner, precision=_HI) / norm  # eq. 4
        m = mats[k]
        total = total + (gamma if m is None else jnp.einsum("nt,t->n", m, gamma, precision=_HI))
    return total.reshape(grid), jnp.dot(rest, unit_partner, precision=_HI) / norm


def _pair_maps(fa: Features, fb: Features, mats_a, mats_b) -> dict[str, Array]:
    """One pair (unbatched Features): eq. 4 per part, eq. 6 per level, the cosine."""
    parts_a, rest_a = fa.parts, fa.rest
    parts_b, rest_b = fb.parts, fb.rest
    ua = fa.embedding / safe_norm(fa.embedding)
    ub = fb.embedding / safe_norm(fb.embedding)
    map_a, rest_share_a = _side_map(parts_a, rest_a, fa.embedding, mats_a, ub, fa.grid)
    map_b, rest_share_b = _side_map(parts_b, rest_b, fb.embedding, mats_b, ua, fb.grid)
    score = cosine(fa.embedding, fb.embedding)  # eq. 2
    return {
        "map_a": map_a,
        "map_b": map_b,
        "score": score,
        "rest_a": rest_share_a,
        "rest_b": rest_share_b,
    }


def _paired_body(
    model, variables, images_a, images_b, *, head_fusion, start_layer, convention, upsampled
):
    if images_a.shape == images_b.shape:
        both = _forward(model, variables, jnp.concatenate([images_a, images_b]), head_fusion)
        b = images_a.shape[0]
        fa, fb = both.slice(0, b), both.slice(b, 2 * b)
    else:
        fa = _forward(model, variables, images_a, head_fusion)
        fb = _forward(model, variables, images_b, head_fusion)
    mats_a = fa.part_matrices(convention, start_layer)
    mats_b = fb.part_matrices(convention, start_layer)
    out = jax.vmap(_pair_maps)(fa.with_parts(), fb.with_parts(), mats_a, mats_b)
    if upsampled:
        out["upsampled_a"] = upsample(out["map_a"], images_a.shape[1:3])
        out["upsampled_b"] = upsample(out["map_b"], images_b.shape[1:3])
    return out


@functools.lru_cache(maxsize=64)
def _paired_fn(model, head_fusion, start_layer, convention, upsampled):
    body = functools.partial(
        _paired_body,
        model,
        head_fusion=head_fusion,
        start_layer=start_layer,
        convention=convention,
        upsampled=upsampled,
    )
    return jax.jit(body)


def paired_maps(
    model,
    variables,
    images_a: Array,
    images_b: Array,
    *,
    head_fusion: str = "mean",
    start_layer: int = 0,
    convention: str = "authors",
    upsampled: bool = True,
    method: str = "paper",
    **options,
) -> dict[str, Array]:
    """Paired similarity maps for a batch of image pairs (the paper's method).

    One compiled function: a single forward pass over both images of every
    pair, then eq. 4 (token contributions), eq. 5 (rollout) and eq. 6
    (redistribution) ``vmap``-ped over the pairs, then bicubic upsampling.

    Args:
      model: a ``ViT`` of any pooling (``gap`` is the paper's eq. 1-4; the
        others use the exact split of ``pairviz_jax.models.decompose``) or a
        CNN such as the BiT ResNet (no rollout).
      variables: model variables.
      images_a: [B, H, W, C], normalised; pair b is (images_a[b], images_b[b]).
      images_b: [B, H', W', C].
      head_fusion: ``mean`` (the paper), ``max`` or ``min``; fused inside the
        model, so only [L, N, N] per image is kept.
      start_layer: first block of the rollout.
      convention: ``"authors"`` (R @ gamma, the paper's figures) or
        ``"transpose"`` (R^T @ gamma, maps that sum to the score).
      upsampled: also return the maps at image resolution.
      method: ``"paper"`` (this method, the default) or another registered
        explanation method (``explain.methods.METHODS``), which then takes
        ``**options`` instead of ``head_fusion``/``start_layer``/``convention``.

    Returns:
      dict with ``map_a`` [B, gh, gw], ``map_b`` [B, gh', gw'], ``score`` [B]
      (the cosine similarity), ``rest_a``/``rest_b`` [B] (the share of the
      score that no token is credited with: 0 for ``gap``), and with
      ``upsampled``: ``upsampled_a`` [B, H, W], ``upsampled_b`` [B, H', W'].
      With the transpose convention ``map_a.sum() + rest_a`` is the score
      minus the share left on prefix (class/register) tokens.
    """
    if method != "paper":
        from pairviz_jax.explain import methods  # imports this module

        return methods.paired_maps(
            model, variables, images_a, images_b, method=method, upsampled=upsampled, **options
        )
    if options:
        raise ValueError(f"paired_maps(method='paper') takes no option {', '.join(options)}")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    _check_model(model, images_a, "images_a")
    _check_model(model, images_b, "images_b")
    if images_a.shape[0] != images_b.shape[0]:
        raise ValueError(
            f"images_a and images_b must hold the same number of pairs, got {images_a.shape[0]} "
            f"and {images_b.shape[0]}"
        )
    depth = getattr(model, "depth", None)
    if depth is not None and not 0 <= start_layer < depth:
        raise ValueError(f"start_layer={start_layer} is outside [0, {depth}) blocks")
    check_finite("images_a", images_a)
    check_finite("images_b", images_b)
    fn = _paired_fn(model, head_fusion, start_layer, convention, upsampled)
    return fn(variables, images_a, images_b)
