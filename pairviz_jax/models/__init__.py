"""Pure flax.linen models; they know nothing of explain, training, data or plots.

Every model is ``__call__(images, *, train=False, probe=None) -> (embedding, out)``;
``Probe`` is what an explanation method injects into the forward pass.
"""

from pairviz_jax.models.probe import Probe
from pairviz_jax.models.resnet import ResNet, decode_resnet
from pairviz_jax.models.vit import ViT, decode_variant

__all__ = ["Probe", "ResNet", "ViT", "decode_resnet", "decode_variant"]
