"""The authors' released PyTorch checkpoints (Black et al., WACV 2022): ViT-B and BiT ResNet.

The ViT (``transformer.embeddings.{patch_embeddings, cls_token,
position_embeddings}``, ``transformer.encoder.layer.{i}.{attention_norm,
attn.{query,key,value,out}, ffn_norm, ffn.fc1, ffn.fc2}``,
``transformer.encoder.encoder_norm``, ``head``) drops its class token after
the position embedding and mean-pools the projected tokens. The ResNet is
BiT's PyTorch port (``root.conv``, ``body.block{s}.unit{u:02d}``, ``head``).
"""

from __future__ import annotations

from pairviz_jax.checkpoints.formats._common import (
    MHA,
    POSEMB,
    Arrays,
    Converted,
    Renamer,
    block_rules,
    conv,
    has,
    linear,
    ln,
)

_AU_L = r"transformer\.encoder\.layer\."
_VIT = Renamer(
    [
        (r"transformer\.embeddings\.patch_embeddings\.weight", "embedding/kernel", conv),
        (r"transformer\.embeddings\.patch_embeddings\.bias", "embedding/bias", None),
        (r"transformer\.embeddings\.cls_token", "cls", None),
        (r"transformer\.embeddings\.position_embeddings", POSEMB, None),
        *block_rules(
            _AU_L,
            {
                r"attention_norm": "LayerNorm_0",
                r"ffn_norm": "LayerNorm_2",
                r"attn\.query": f"{MHA}/query",
                r"attn\.key": f"{MHA}/key",
                r"attn\.value": f"{MHA}/value",
                r"attn\.out": f"{MHA}/out",
                r"ffn\.fc1": "MlpBlock_3/Dense_0",
                r"ffn\.fc2": "MlpBlock_3/Dense_1",
            },
        ),
        (
            r"transformer\.encoder\.encoder_norm\.(?P<ln>weight|bias)",
            ln("Transformer/encoder_norm"),
            None,
        ),
        (r"head\.weight", "head/kernel", linear),
        (r"head\.bias", "head/bias", None),
    ]
)

_AR = r"body\.block(\d+)\.unit(\d+)\."
_RESNET = Renamer(
    [
        (r"root\.conv\.weight", "root_block/standardized_conv2d/kernel", conv),
        (_AR + r"gn1\.(?P<ln>weight|bias)", r"block\1/unit\2/a/" + ln("group_norm"), None),
        (_AR + r"gn2\.(?P<ln>weight|bias)", r"block\1/unit\2/b/" + ln("group_norm"), None),
        (_AR + r"gn3\.(?P<ln>weight|bias)", r"block\1/unit\2/c/" + ln("group_norm"), None),
        (_AR + r"conv1\.weight", r"block\1/unit\2/a/standardized_conv2d/kernel", conv),
        (_AR + r"conv2\.weight", r"block\1/unit\2/b/standardized_conv2d/kernel", conv),
        (_AR + r"conv3\.weight", r"block\1/unit\2/c/standardized_conv2d/kernel", conv),
        (_AR + r"downsample\.weight", r"block\1/unit\2/a/proj/standardized_conv2d/kernel", conv),
        (r"head\.gn\.(?P<ln>weight|bias)", ln("group_norm"), None),
        (r"head\.conv\.weight", "head/conv2d/kernel", conv),
        (r"head\.conv\.bias", "head/conv2d/bias", None),
    ]
)


def is_vit(arrays: Arrays) -> bool:
    return has(arrays, "transformer.embeddings.patch_embeddings.weight")


def convert_vit(arrays: Arrays) -> Converted:
    params, leftovers = _VIT(arrays)
    return Converted(
        "vit",
        "authors_vit",
        params,
        model_family="authors",
        leftovers=leftovers,
        # The paper's model: the class token is dropped after the position embedding.
        facts=dict(keep_class_token=False, pool_type="gap"),
        interpolation="zoom",
    )


def is_resnet(arrays: Arrays) -> bool:
    return has(arrays, "root.conv.weight", "body.block1.unit01.conv1.weight")


def convert_resnet(arrays: Arrays) -> Converted:
    params, leftovers = _RESNET(arrays)
    return Converted(
        "resnet", "authors_resnet", params, model_family="authors", leftovers=leftovers
    )
