"""Key layouts: which format a file's arrays are in, and their renaming to the project's names.

One module per family of formats: ``vit_npz`` (original ViT / AugReg,
big_vision, SigLIP ``.npz``), ``timm`` (ViT, DeiT, ResNetV2), ``hf``
(Hugging Face ViT, Dinov2, CLIP, SigLIP), ``dinov2`` (the hub's state dicts),
``clip`` (OpenAI / OpenCLIP), ``authors`` (Black et al.'s ViT and ResNet),
``bit`` (BiT ``.npz``). ``convert`` tries them in a fixed order, from the most
specific keys to the most generic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pairviz_jax.checkpoints.formats import authors, bit, clip, dinov2, hf, timm, vit_npz
from pairviz_jax.checkpoints.formats._common import (
    CONFIG_KEY,
    META_KEY,
    NORMALIZATIONS,
    POSEMB,
    REG,
    Arrays,
    Converted,
    LayoutError,
    strip,
)

__all__ = ["CONFIG_KEY", "META_KEY", "NORMALIZATIONS", "POSEMB", "REG", "Converted", "convert"]

_WRAPPERS = ("state_dict.", "model.", "module.")

# (test, converter), most specific first.
_LAYOUTS: list[tuple[Callable[[Arrays], Any], Callable[[Arrays], Converted]]] = [
    (bit.is_bit, bit.convert),
    (timm.is_timm_resnet, timm.convert_resnet),
    (authors.is_resnet, authors.convert_resnet),
    (vit_npz.is_npz_vit, vit_npz.convert),
    (clip.is_clip, clip.convert),
    (hf.clip_like_prefix, hf.convert_clip_like),
    (hf.dino_prefix, hf.convert_dinov2),
    (hf.vit_prefix, hf.convert_vit),
    (dinov2.is_hub, dinov2.convert),
    (timm.is_timm_vit, timm.convert_vit),
    (authors.is_vit, authors.convert_vit),
]


def _json(arrays: Arrays, key: str) -> dict[str, Any]:
    if key not in arrays:
        return {}
    try:
        return json.loads(str(arrays.pop(key)))
    except json.JSONDecodeError as e:
        raise LayoutError(f"unreadable {key} ({e})") from None


def convert(
    arrays: Mapping[str, Any],
    hf_config: Mapping[str, Any] | None = None,
    preprocessor: Mapping[str, Any] | None = None,
) -> Converted:
    """Detects the layout of a file's arrays and renames them to the project's names.

    Args:
      arrays: ``{file key: array}`` as read from the file(s).
      hf_config: a Hugging Face folder's ``config.json``, checked against the
        weights and read for the settings the shapes do not give.
      preprocessor: its ``preprocessor_config.json`` (normalisation).

    Returns:
      The ``Converted`` params.

    Raises:
      LayoutError: no known layout matches, or config.json contradicts the
        weights (the caller adds the file name).
    """
    arrays = dict(arrays)
    config = _json(arrays, CONFIG_KEY)
    meta = _json(arrays, META_KEY)
    # Wrappers: {"state_dict": ...} or {"model": ...} dicts, DataParallel's "module.".
    for wrapper in _WRAPPERS:
        if arrays and all(k.startswith(wrapper) for k in arrays):
            arrays = strip(arrays, wrapper)
    for test, converter in _LAYOUTS:
        found = test(arrays)  # a bool, or a key prefix ("" included) / None
        if found is not None and found is not False:
            conv = converter(arrays)
            break
    else:
        sample = sorted(arrays)[:6]
        raise LayoutError(
            "no known weight layout (original ViT/AugReg, big_vision or SigLIP .npz; timm ViT "
            "or DeiT; Hugging Face ViT, Dinov2, CLIP or SigLIP; DINOv2 hub; OpenAI/OpenCLIP "
            f"CLIP; BiT .npz; timm ResNetV2; the authors' ViT or ResNet); first keys: {sample}"
        )
    if hf_config is not None:
        if conv.layout not in hf.MODEL_TYPES:
            raise LayoutError(
                f"a config.json folder, but the weights are a {conv.layout} layout, not a "
                "Hugging Face one"
            )
        hf.apply_config(conv, hf_config, preprocessor)
    if config or meta:  # written by the project's `save`
        conv.config = config
        conv.model_family = meta.get("model_family", conv.model_family)
        conv.interpolation = meta.get("interpolation", conv.interpolation)
        norm = meta.get("normalization")
        conv.normalization = tuple(map(tuple, norm)) if isinstance(norm, list) else norm
    return conv
