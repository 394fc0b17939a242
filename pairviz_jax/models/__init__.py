"""Pure flax.linen models; they know nothing of explain, training, data or plots."""

from pairviz_jax.models.resnet import ResNet, decode_resnet
from pairviz_jax.models.vit import ViT, decode_variant

__all__ = ["ResNet", "ViT", "decode_resnet", "decode_variant"]
