"""Pure flax.linen models; they know nothing of explain, training, data or plots."""

from pairviz_jax.models.vit import ViT, decode_variant

__all__ = ["ViT", "decode_variant"]
