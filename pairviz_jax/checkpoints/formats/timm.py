"""timm state dicts: ``VisionTransformer``, DeiT's ``VisionTransformerDistilled``, ``ResNetV2``.

ViT keys: ``patch_embed.proj``, ``cls_token``, ``dist_token`` (DeiT),
``reg_token``, ``pos_embed`` (covering the class and distillation tokens
unless the model has ``no_embed_class``), ``blocks.{i}.norm1``,
``attn.qkv`` (fused q, k, v), ``attn.proj``, ``ls1.gamma`` (layer scale),
``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``, ``norm``, ``head``
(and DeiT's ``head_dist``). timm resamples position embeddings bicubically
with antialiasing (``resample_abs_pos_embed`` defaults).
"""

from __future__ import annotations

import re

from pairviz_jax.checkpoints.formats._common import (
    MHA,
    POSEMB,
    REG,
    Arrays,
    Converted,
    Renamer,
    Rule,
    block_rules,
    conv,
    drop,
    has,
    linear,
    ln,
    split_fused_qkv,
)

# Block sub-modules shared by timm and the DINOv2 hub code (same names).
BLOCK_NAMES = {
    r"norm1": "LayerNorm_0",
    r"attn\.qkv": f"{MHA}/qkv",
    r"attn\.proj": f"{MHA}/out",
    r"ls1\.gamma": "ls1",
    r"norm2": "LayerNorm_2",
    r"mlp\.fc1": "MlpBlock_3/Dense_0",
    r"mlp\.fc2": "MlpBlock_3/Dense_1",
    r"ls2\.gamma": "ls2",
}

VIT_RULES: list[Rule] = [
    (r"patch_embed\.proj\.weight", "embedding/kernel", conv),
    (r"patch_embed\.proj\.bias", "embedding/bias", None),
    (r"cls_token", "cls", None),
    (r"dist_token", "dist", None),
    (r"reg_token", REG, None),
    (r"pos_embed", POSEMB, None),
    *block_rules(r"blocks\.", BLOCK_NAMES),
    (r"norm\.(?P<ln>weight|bias)", ln("Transformer/encoder_norm"), None),
    (r"head\.weight", "head/kernel", linear),
    (r"head\.bias", "head/bias", None),
]
_VIT = Renamer(VIT_RULES)


def is_timm_vit(arrays: Arrays) -> bool:
    return has(arrays, "patch_embed.proj.weight")


def convert_vit(arrays: Arrays) -> Converted:
    """timm ``VisionTransformer`` (or DeiT distilled, when ``dist_token`` is there)."""
    dropped: dict[str, str] = {}
    distilled = "dist_token" in arrays
    if distilled:
        why = "DeiT classifiers (the embedding is the pre-logits mean of class and dist token)"
        arrays = drop(arrays, r"head(_dist)?\.(weight|bias)", why, dropped)
    params, leftovers = _VIT(arrays)
    split_fused_qkv(params)
    if distilled:
        return Converted(
            "vit",
            "timm_deit",
            params,
            model_family="deit",
            leftovers=leftovers,
            dropped=dropped,
            facts=dict(pool_type="tok", layer_norm_eps=1e-6, mlp_act="gelu"),
            posemb_prefix=2,
            interpolation="bicubic_antialias",
            normalization="imagenet",
        )
    return Converted(
        "vit",
        "timm_vit",
        params,
        leftovers=leftovers,
        dropped=dropped,
        interpolation="bicubic_antialias",
    )


_TR = r"block(\d+)\.unit(\d+)\."
_RESNET = Renamer(
    [
        (r"stem\.conv\.weight", "root_block/standardized_conv2d/kernel", conv),
        (_TR + r"norm1\.(?P<ln>weight|bias)", r"block\1/unit\2/a/" + ln("group_norm"), None),
        (_TR + r"norm2\.(?P<ln>weight|bias)", r"block\1/unit\2/b/" + ln("group_norm"), None),
        (_TR + r"norm3\.(?P<ln>weight|bias)", r"block\1/unit\2/c/" + ln("group_norm"), None),
        (_TR + r"conv1\.weight", r"block\1/unit\2/a/standardized_conv2d/kernel", conv),
        (_TR + r"conv2\.weight", r"block\1/unit\2/b/standardized_conv2d/kernel", conv),
        (_TR + r"conv3\.weight", r"block\1/unit\2/c/standardized_conv2d/kernel", conv),
        (
            _TR + r"downsample\.conv\.weight",
            r"block\1/unit\2/a/proj/standardized_conv2d/kernel",
            conv,
        ),
        (r"norm\.(?P<ln>weight|bias)", ln("group_norm"), None),
        (r"head\.fc\.weight", "head/conv2d/kernel", conv),
        (r"head\.fc\.bias", "head/conv2d/bias", None),
    ]
)


def is_timm_resnet(arrays: Arrays) -> bool:
    stages = any(k.startswith("stages.0.blocks.0.") for k in arrays)
    return has(arrays, "stem.conv.weight") and stages


def convert_resnet(arrays: Arrays) -> Converted:
    """timm counts stages and blocks from 0; BiT names count from 1 (``unit01``)."""

    def bit_numbers(m: re.Match) -> str:
        return f"block{int(m.group(1)) + 1}.unit{int(m.group(2)) + 1:02d}."

    renamed = {re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", bit_numbers, k): k for k in arrays}
    params, leftovers = _RESNET({new: arrays[old] for new, old in renamed.items()})
    leftovers = {renamed[k]: v for k, v in leftovers.items()}
    return Converted("resnet", "timm_resnetv2", params, model_family="bit", leftovers=leftovers)
