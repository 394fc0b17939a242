"""What an explanation method injects into one forward pass: one small frozen object.

``ViT.__call__(images, *, train=False, probe=None)`` reads a ``Probe``: each layer reads
the field it needs in one place (the LayerNorm, MLP and attention read ``detach``, the
attention reads its entry of ``attention_deltas`` and ``attention_fusion``, the encoder
reads ``block_deltas``). The default probe changes nothing: the forward pass of the
embedding alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.struct
import jax

Array = jax.Array


@flax.struct.dataclass
class Probe:
    """Hooks of one forward pass (a pytree; the flags are static).

    Attributes:
      detach: same values, but attention weights, LayerNorm scalings (1/sigma) and
        activation gates are constants for the gradient (conservative propagation,
        Ali et al. 2022; see ``models.layers``).
      attention_fusion: what ``out["attention"]`` holds per block: None every head
        ([B, H, N', N']), ``mean|max|min`` the head-fused map ([B, N', N']).
      block_deltas: ``{k: [B, N', D]}`` added to the input of block k (k = depth: the
        last block's output before ``encoder_norm``). Zeros there make ``jax.grad``
        give the gradient with respect to those tokens (their values:
        ``out["block_inputs"][k]``).
      attention_deltas: ``{k: [B, H, N', N']}`` added to block k's softmax weights
        (zeros: the gradient with respect to the attention); k = depth:
        ``[B, H, 1, N']`` added to the MAP head's weights.
    """

    detach: bool = flax.struct.field(pytree_node=False, default=False)
    attention_fusion: str | None = flax.struct.field(pytree_node=False, default=None)
    block_deltas: Mapping[int, Array] | None = None
    attention_deltas: Mapping[int, Array] | None = None

    def block_delta(self, k: int) -> Array | None:
        """The delta added to block k's input, or None."""
        return (self.block_deltas or {}).get(k)

    def attention_delta(self, k: int | None) -> Array | None:
        """The delta added to the softmax weights of attention k, or None."""
        return None if k is None else (self.attention_deltas or {}).get(k)

    @property
    def is_plain(self) -> bool:
        """True when the probe injects nothing (the attention fusion aside)."""
        return not (self.detach or self.block_deltas or self.attention_deltas)


NO_PROBE = Probe()
