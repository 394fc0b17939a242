"""The model a checkpoint describes: shapes first, then the family's facts and saved settings."""

from __future__ import annotations

import re
from typing import Any

from pairviz_jax.checkpoints._io import CheckpointError
from pairviz_jax.checkpoints.formats import NORMALIZATIONS, REG

# Standard heads per ViT width (Ti, S, M, B, L, So400m, H, g, DINOv2-g, bigG): used when the
# file's shapes do not determine the heads (fused torch attention) and none are given.
STANDARD_HEADS = {
    192: 3,
    384: 6,
    512: 8,
    768: 12,
    1024: 16,
    1152: 16,
    1280: 16,
    1408: 16,
    1536: 24,
    1664: 16,
}
_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/")
_PFX = "Transformer/encoderblock_0/"


def vit_spec(ckpt) -> dict[str, Any]:
    """``ViT`` settings from the shapes, then the family's facts, then ``save``'s settings."""
    p = ckpt.params
    if "embedding/kernel" not in p:
        raise CheckpointError(f"{ckpt.path}: no patch embedding ('embedding/kernel')")
    kernel = p["embedding/kernel"]
    depth = len({m.group(1) for k in p if (m := _BLOCK.match(k))})
    spec: dict[str, Any] = dict(
        patch_size=tuple(int(d) for d in kernel.shape[:2]),
        width=int(kernel.shape[-1]),
        depth=depth,
        class_token="cls" in p,
    )
    if "dist" in p:
        spec["distill_token"] = True
    if REG in p:
        spec["num_registers"] = int(p[REG].shape[1])
    if _PFX + "ls1" in p:
        spec["layer_scale"] = 1.0
    if "Transformer/ln_pre/scale" in p:
        spec["ln_pre"] = True
    d0 = p.get(_PFX + "MlpBlock_3/Dense_0/kernel")
    d1 = p.get(_PFX + "MlpBlock_3/Dense_1/kernel")
    swiglu = d0 is not None and d1 is not None and d0.shape[-1] == 2 * d1.shape[0]
    if d1 is not None:
        spec["mlp_dim"] = int(d1.shape[0])
    elif d0 is not None:
        spec["mlp_dim"] = int(d0.shape[-1])
    query = p.get(_PFX + "MultiHeadDotProductAttention_1/query/kernel")
    if query is not None and query.ndim == 3:
        spec["num_heads"] = int(query.shape[1])
    if "head/kernel" in p:
        spec["proj_dim"] = int(p["head/kernel"].shape[-1])
        spec["proj_bias"] = "head/bias" in p
    if "MAPHead_0/probe" in p:
        spec["pool_type"] = "map"
    else:
        spec["pool_type"] = "tok" if spec["class_token"] else "gap"
    spec.update(ckpt.facts)
    if swiglu:
        spec["mlp_act"] = "swiglu"  # the shapes say so, whatever the family's default
    spec.update(ckpt.config)
    return spec


def resnet_spec(ckpt) -> dict[str, Any]:
    p = ckpt.params
    root = p.get("root_block/standardized_conv2d/kernel")
    if root is None:
        raise CheckpointError(f"{ckpt.path}: no root convolution")
    units: dict[int, set[int]] = {}
    for k in p:
        if m := re.match(r"block(\d+)/unit(\d+)/", k):
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    spec: dict[str, Any] = dict(
        width=int(root.shape[-1]),
        block_sizes=tuple(len(units[s]) for s in sorted(units)),
        proj_dim=int(p["head/conv2d/kernel"].shape[-1]) if "head/conv2d/kernel" in p else None,
    )
    spec.update(ckpt.facts)
    spec.update(ckpt.config)
    return spec


def with_heads(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """Adds ``num_heads`` from the standard table when nothing else gave it."""
    if "num_heads" not in spec:
        if spec["width"] not in STANDARD_HEADS:
            raise CheckpointError(
                f"{path}: the number of heads is not determined by this file's shapes "
                f"(width {spec['width']}); pass it, e.g. model_from(path, num_heads=...)"
            )
        spec["num_heads"] = STANDARD_HEADS[spec["width"]]
    return spec


def normalization(ckpt) -> dict[str, Any] | None:
    """``{"name", "mean", "std"}`` the family's images are normalised with, or None if unknown."""
    norm = ckpt.normalization
    if norm is None:
        return None
    if isinstance(norm, str):
        mean, std = NORMALIZATIONS[norm]
        return dict(name=norm, mean=mean, std=std)
    mean, std = norm
    name = next((n for n, ms in NORMALIZATIONS.items() if ms == (tuple(mean), tuple(std))), None)
    return dict(name=name or "file", mean=tuple(mean), std=tuple(std))
