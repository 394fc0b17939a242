"""The DINOv2 hub state dicts (``dinov2_vit{s,b,l,g}14[_reg]`` / ``*_pretrain.pth``).

Keys (facebookresearch/dinov2, ``DinoVisionTransformer``): ``cls_token``
[1, 1, D], ``pos_embed`` [1, 1 + M*M, D], ``register_tokens`` [1, R, D],
``mask_token`` [1, D] (masked-image training only: dropped),
``patch_embed.proj``, ``blocks.{i}.`` (or ``blocks.{chunk}.{i}.`` when the
blocks were chunked for FSDP) ``norm1``, ``attn.qkv``, ``attn.proj``,
``ls1.gamma``, ``norm2``, ``mlp.fc1``/``mlp.fc2`` or the SwiGLU
``mlp.w12``/``mlp.w3`` (ViT-g), ``ls2.gamma``, and ``norm``.

The hub code resamples its position embedding with
``interpolate(scale_factor=((H//14 + 0.1) / M, (W//14 + 0.1) / M),
mode="bicubic")`` (``interpolate_offset=0.1``), and the register models with
``interpolate(size=(H//14, W//14), mode="bicubic", antialias=True)``
(``interpolate_offset=0``, ``interpolate_antialias=True``). Neither is written
in the file, so the convention follows the registers.
"""

from __future__ import annotations

import re

from pairviz_jax.checkpoints.formats._common import (
    REG,
    Arrays,
    Converted,
    Renamer,
    block_rules,
    drop,
    has,
    split_fused_qkv,
)
from pairviz_jax.checkpoints.formats.timm import VIT_RULES

_HUB = Renamer(
    [
        (r"register_tokens", REG, None),
        *[r for r in VIT_RULES if not r[0].startswith(("reg_token", "dist_token", "head"))],
        *block_rules(
            r"blocks\.", {r"mlp\.w12": "MlpBlock_3/Dense_0", r"mlp\.w3": "MlpBlock_3/Dense_1"}
        ),
    ]
)
_CHUNKED = re.compile(r"blocks\.\d+\.(\d+)\.(.*)")


def is_hub(arrays: Arrays) -> bool:
    return has(arrays, "patch_embed.proj.weight") and (
        "mask_token" in arrays or "register_tokens" in arrays
    )


def convert(arrays: Arrays) -> Converted:
    dropped: dict[str, str] = {}
    arrays = drop(arrays, r"mask_token", "mask token (masked-image training only)", dropped)
    # Chunked blocks (block_chunks > 0) keep the global block index in the second number.
    arrays = {
        (f"blocks.{m.group(1)}.{m.group(2)}" if (m := _CHUNKED.fullmatch(k)) else k): v
        for k, v in arrays.items()
    }
    params, leftovers = _HUB(arrays)
    split_fused_qkv(params)
    return converted("dinov2_hub", params, leftovers, dropped, plain="bicubic_offset")


def converted(layout: str, params, leftovers, dropped, *, plain: str) -> Converted:
    """A DINOv2 checkpoint of either layout: class-token pooling, LayerNorm eps 1e-6, exact
    GELU, ImageNet statistics; ``plain``: the layout's position-embedding resampling without
    registers (with registers both families resample antialiased)."""
    return Converted(
        "vit",
        layout,
        params,
        model_family="dinov2",
        leftovers=leftovers,
        dropped=dropped,
        facts=dict(pool_type="tok", layer_norm_eps=1e-6, mlp_act="gelu", class_token=True),
        posemb_prefix=1,
        interpolation="bicubic_antialias" if REG in params else plain,
        normalization="imagenet",
    )
