"""Key layouts: rename a file's arrays to the project's parameter names.

Every layout converts ``{file key: array}`` into ``{"/"-joined param name:
array}`` of the project's models (``pairviz_jax.models.ViT`` with original
ViT / AugReg names, ``pairviz_jax.models.ResNet`` with BiT names), plus the
keys it could not place (reported as unexpected by the merge).

ViT layouts: ``vit_npz`` (original ViT / AugReg), ``big_vision`` (incl. the
scanned ``encoderblock`` with a leading depth axis), ``timm_vit``, ``hf_vit``
(Hugging Face ``ViTModel`` / ``ViTForImageClassification``) and
``authors_vit`` (Black et al.'s released PyTorch models). ResNet layouts:
``bit_npz`` (BiT release), ``timm_resnetv2`` and ``authors_resnet``.

Torch-style attention weights are fused over heads (``[D, D]``); the merge
splits them to ``[D, H, D/H]`` with the model's number of heads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]

POSEMB = "Transformer/posembed_input/pos_embedding"
CONFIG_KEY = "pairviz_config"


@dataclass
class Converted:
    """A file's arrays in the project's names.

    Attributes:
      family: ``"vit"`` or ``"resnet"``.
      layout: the layout name (see the module docstring).
      params: ``{"/"-joined param name: array}``.
      leftovers: file keys no rule placed, with their arrays.
      config: the ``pairviz_config`` stored by ``save``, if any.
    """

    family: str
    layout: str
    params: Arrays
    leftovers: Arrays = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def _conv(w: np.ndarray) -> np.ndarray:
    """torch conv weight [O, I, kh, kw] -> flax kernel [kh, kw, I, O]."""
    return np.transpose(w, (2, 3, 1, 0))


def _linear(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> flax kernel [in, out]."""
    return np.transpose(w)


def _strip(arrays: Mapping[str, np.ndarray], prefix: str) -> Arrays:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in arrays.items()}


class _Renamer:
    """Applies ``(regex, template, transform)`` rules; unmatched keys are leftovers."""

    def __init__(self, rules: list[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None]]):
        self.rules = [(re.compile(p), t, f) for p, t, f in rules]

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        params, leftovers = {}, {}
        for key, value in arrays.items():
            for pattern, template, fn in self.rules:
                m = pattern.fullmatch(key)
                if m:
                    params[m.expand(template)] = fn(value) if fn else value
                    break
            else:
                leftovers[key] = value
        return params, leftovers


_LN = r"(weight|bias)"


def _ln(name: str) -> str:
    """Template for a LayerNorm/GroupNorm whose torch ``weight`` is flax ``scale``."""
    return name + r"/\g<ln>"


def _fix_norm_names(params: Arrays) -> Arrays:
    """Renames torch norm ``weight`` to flax ``scale`` (marked ``/\\g<ln>`` above)."""
    out = {}
    for k, v in params.items():
        if k.endswith("/weight"):
            k = k[: -len("weight")] + "scale"
        out[k] = v
    return out


_BLK = "Transformer/encoderblock_"
_TIMM_VIT = _Renamer(
    [
        (r"patch_embed\.proj\.weight", "embedding/kernel", _conv),
        (r"patch_embed\.proj\.bias", "embedding/bias", None),
        (r"cls_token", "cls", None),
        (r"pos_embed", POSEMB, None),
        (r"blocks\.(\d+)\.norm1\.(?P<ln>weight|bias)", _BLK + r"\1/" + _ln("LayerNorm_0"), None),
        (r"blocks\.(\d+)\.norm2\.(?P<ln>weight|bias)", _BLK + r"\1/" + _ln("LayerNorm_2"), None),
        (r"blocks\.(\d+)\.attn\.qkv\.weight", _BLK + r"\1/qkv/kernel", _linear),
        (r"blocks\.(\d+)\.attn\.qkv\.bias", _BLK + r"\1/qkv/bias", None),
        (
            r"blocks\.(\d+)\.attn\.proj\.weight",
            _BLK + r"\1/MultiHeadDotProductAttention_1/out/kernel",
            _linear,
        ),
        (
            r"blocks\.(\d+)\.attn\.proj\.bias",
            _BLK + r"\1/MultiHeadDotProductAttention_1/out/bias",
            None,
        ),
        (r"blocks\.(\d+)\.mlp\.fc1\.weight", _BLK + r"\1/MlpBlock_3/Dense_0/kernel", _linear),
        (r"blocks\.(\d+)\.mlp\.fc1\.bias", _BLK + r"\1/MlpBlock_3/Dense_0/bias", None),
        (r"blocks\.(\d+)\.mlp\.fc2\.weight", _BLK + r"\1/MlpBlock_3/Dense_1/kernel", _linear),
        (r"blocks\.(\d+)\.mlp\.fc2\.bias", _BLK + r"\1/MlpBlock_3/Dense_1/bias", None),
        (r"norm\.(?P<ln>weight|bias)", _ln("Transformer/encoder_norm"), None),
        (r"head\.weight", "head/kernel", _linear),
        (r"head\.bias", "head/bias", None),
    ]
)

_HF_L = r"encoder\.layer\.(\d+)\."
_HF_VIT = _Renamer(
    [
        (r"embeddings\.patch_embeddings\.projection\.weight", "embedding/kernel", _conv),
        (r"embeddings\.patch_embeddings\.projection\.bias", "embedding/bias", None),
        (r"embeddings\.cls_token", "cls", None),
        (r"embeddings\.position_embeddings", POSEMB, None),
        (
            _HF_L + r"layernorm_before\.(?P<ln>weight|bias)",
            _BLK + r"\1/" + _ln("LayerNorm_0"),
            None,
        ),
        (_HF_L + r"layernorm_after\.(?P<ln>weight|bias)", _BLK + r"\1/" + _ln("LayerNorm_2"), None),
        (
            _HF_L + r"attention\.attention\.(query|key|value)\.weight",
            _BLK + r"\1/MultiHeadDotProductAttention_1/\2/kernel",
            _linear,
        ),
        (
            _HF_L + r"attention\.attention\.(query|key|value)\.bias",
            _BLK + r"\1/MultiHeadDotProductAttention_1/\2/bias",
            None,
        ),
        (
            _HF_L + r"attention\.output\.dense\.weight",
            _BLK + r"\1/MultiHeadDotProductAttention_1/out/kernel",
            _linear,
        ),
        (
            _HF_L + r"attention\.output\.dense\.bias",
            _BLK + r"\1/MultiHeadDotProductAttention_1/out/bias",
            None,
        ),
        (_HF_L + r"intermediate\.dense\.weight", _BLK + r"\1/MlpBlock_3/Dense_0/kernel", _linear),
        (_HF_L + r"intermediate\.dense\.bias", _BLK + r"\1/MlpBlock_3/Dense_0/bias", None),
        (_HF_L + r"output\.dense\.weight", _BLK + r"\1/MlpBlock_3/Dense_1/kernel", _linear),
        (_HF_L + r"output\.dense\.bias", _BLK + r"\1/MlpBlock_3/Dense_1/bias", None),
        # transformers >= 5 names inside the model (its files keep the names above).
        (
            r"layers\.(\d+)\.attention\.(q|k|v|o)_proj\.weight",
            _BLK + r"\1/MultiHeadDotProductAttention_1/\2/kernel",
            _linear,
        ),
        (
            r"layers\.(\d+)\.attention\.(q|k|v|o)_proj\.bias",
            _BLK + r"\1/MultiHeadDotProductAttention_1/\2/bias",
            None,
        ),
        (
            r"layers\.(\d+)\.layernorm_before\.(?P<ln>weight|bias)",
            _BLK + r"\1/" + _ln("LayerNorm_0"),
            None,
        ),
        (
            r"layers\.(\d+)\.layernorm_after\.(?P<ln>weight|bias)",
            _BLK + r"\1/" + _ln("LayerNorm_2"),
            None,
        ),
        (r"layers\.(\d+)\.mlp\.fc1\.weight", _BLK + r"\1/MlpBlock_3/Dense_0/kernel", _linear),
        (r"layers\.(\d+)\.mlp\.fc1\.bias", _BLK + r"\1/MlpBlock_3/Dense_0/bias", None),
        (r"layers\.(\d+)\.mlp\.fc2\.weight", _BLK + r"\1/MlpBlock_3/Dense_1/kernel", _linear),
        (r"layers\.(\d+)\.mlp\.fc2\.bias", _BLK + r"\1/MlpBlock_3/Dense_1/bias", None),
        (r"layernorm\.(?P<ln>weight|bias)", _ln("Transformer/encoder_norm"), None),
        # The tanh pooler on the class token is the original ViT's `pre_logits`.
        (r"pooler\.dense\.weight", "pre_logits/kernel", _linear),
        (r"pooler\.dense\.bias", "pre_logits/bias", None),
        (r"classifier\.weight", "head/kernel", _linear),
        (r"classifier\.bias", "head/bias", None),
    ]
)

_AU_L = r"transformer\.encoder\.layer\.(\d+)\."
_AUTHORS_VIT = _Renamer(
    [
        (r"transformer\.embeddings\.patch_embeddings\.weight", "embedding/kernel", _conv),
        (r"transformer\.embeddings\.patch_embeddings\.bias", "embedding/bias", None),
        (r"transformer\.embeddings\.cls_token", "cls", None),
        (r"transformer\.embeddings\.position_embeddings", POSEMB, None),
        (_AU_L + r"attention_norm\.(?P<ln>weight|bias)", _BLK + r"\1/" + _ln("LayerNorm_0"), None),
        (_AU_L + r"ffn_norm\.(?P<ln>weight|bias)", _BLK + r"\1/" + _ln("LayerNorm_2"), None),
        (
            _AU_L + r"attn\.(query|key|value|out)\.weight",
            _BLK + r"\1/MultiHeadDotProductAttention_1/\2/kernel",
            _linear,
        ),
        (
            _AU_L + r"attn\.(query|key|value|out)\.bias",
            _BLK + r"\1/MultiHeadDotProductAttention_1/\2/bias",
            None,
        ),
        (_AU_L + r"ffn\.fc1\.weight", _BLK + r"\1/MlpBlock_3/Dense_0/kernel", _linear),
        (_AU_L + r"ffn\.fc1\.bias", _BLK + r"\1/MlpBlock_3/Dense_0/bias", None),
        (_AU_L + r"ffn\.fc2\.weight", _BLK + r"\1/MlpBlock_3/Dense_1/kernel", _linear),
        (_AU_L + r"ffn\.fc2\.bias", _BLK + r"\1/MlpBlock_3/Dense_1/bias", None),
        (
            r"transformer\.encoder\.encoder_norm\.(?P<ln>weight|bias)",
            _ln("Transformer/encoder_norm"),
            None,
        ),
        (r"head\.weight", "head/kernel", _linear),
        (r"head\.bias", "head/bias", None),
    ]
)

_TR = r"block(\d+)\.unit(\d+)\."
_TIMM_RESNET = _Renamer(
    [
        (r"stem\.conv\.weight", "root_block/standardized_conv2d/kernel", _conv),
        (_TR + r"norm1\.(?P<ln>weight|bias)", r"block\1/unit\2/a/" + _ln("group_norm"), None),
        (_TR + r"norm2\.(?P<ln>weight|bias)", r"block\1/unit\2/b/" + _ln("group_norm"), None),
        (_TR + r"norm3\.(?P<ln>weight|bias)", r"block\1/unit\2/c/" + _ln("group_norm"), None),
        (_TR + r"conv1\.weight", r"block\1/unit\2/a/standardized_conv2d/kernel", _conv),
        (_TR + r"conv2\.weight", r"block\1/unit\2/b/standardized_conv2d/kernel", _conv),
        (_TR + r"conv3\.weight", r"block\1/unit\2/c/standardized_conv2d/kernel", _conv),
        (
            _TR + r"downsample\.conv\.weight",
            r"block\1/unit\2/a/proj/standardized_conv2d/kernel",
            _conv,
        ),
        (r"norm\.(?P<ln>weight|bias)", _ln("group_norm"), None),
        (r"head\.fc\.weight", "head/conv2d/kernel", _conv),
        (r"head\.fc\.bias", "head/conv2d/bias", None),
    ]
)

_AR = r"body\.block(\d+)\.unit(\d+)\."
_AUTHORS_RESNET = _Renamer(
    [
        (r"root\.conv\.weight", "root_block/standardized_conv2d/kernel", _conv),
        (_AR + r"gn1\.(?P<ln>weight|bias)", r"block\1/unit\2/a/" + _ln("group_norm"), None),
        (_AR + r"gn2\.(?P<ln>weight|bias)", r"block\1/unit\2/b/" + _ln("group_norm"), None),
        (_AR + r"gn3\.(?P<ln>weight|bias)", r"block\1/unit\2/c/" + _ln("group_norm"), None),
        (_AR + r"conv1\.weight", r"block\1/unit\2/a/standardized_conv2d/kernel", _conv),
        (_AR + r"conv2\.weight", r"block\1/unit\2/b/standardized_conv2d/kernel", _conv),
        (_AR + r"conv3\.weight", r"block\1/unit\2/c/standardized_conv2d/kernel", _conv),
        (_AR + r"downsample\.weight", r"block\1/unit\2/a/proj/standardized_conv2d/kernel", _conv),
        (r"head\.gn\.(?P<ln>weight|bias)", _ln("group_norm"), None),
        (r"head\.conv\.weight", "head/conv2d/kernel", _conv),
        (r"head\.conv\.bias", "head/conv2d/bias", None),
    ]
)


def _hf_vit(arrays: Arrays) -> tuple[Arrays, Arrays]:
    params, leftovers = _HF_VIT(arrays)
    short = {"/q/": "/query/", "/k/": "/key/", "/v/": "/value/", "/o/": "/out/"}
    out = {}
    for k, v in _fix_norm_names(params).items():
        for a, b in short.items():
            k = k.replace(
                "MultiHeadDotProductAttention_1" + a, "MultiHeadDotProductAttention_1" + b
            )
        out[k] = v
    return out, leftovers


def _timm_vit(arrays: Arrays) -> tuple[Arrays, Arrays]:
    params, leftovers = _TIMM_VIT(arrays)
    params = _fix_norm_names(params)
    for key in [k for k in params if k.endswith(("/qkv/kernel", "/qkv/bias"))]:
        qkv = params.pop(key)
        block, kind = key.rsplit("/qkv/", 1)
        parts = np.split(qkv, 3, axis=-1)  # kernel [D, 3D] / bias [3D]
        for name, part in zip(("query", "key", "value"), parts, strict=True):
            params[f"{block}/MultiHeadDotProductAttention_1/{name}/{kind}"] = part
    return params, leftovers


def _timm_resnet(arrays: Arrays) -> tuple[Arrays, Arrays]:
    """timm counts stages and blocks from 0; BiT names count from 1 (``unit01``)."""

    def bit_numbers(m: re.Match) -> str:
        return f"block{int(m.group(1)) + 1}.unit{int(m.group(2)) + 1:02d}."

    renamed = {re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", bit_numbers, k): k for k in arrays}
    params, leftovers = _TIMM_RESNET({new: arrays[old] for new, old in renamed.items()})
    return _fix_norm_names(params), {renamed[k]: v for k, v in leftovers.items()}


def _vit_npz(arrays: Arrays) -> tuple[Arrays, Arrays, str]:
    """Original ViT / AugReg or big_vision ``.npz``; returns (params, leftovers, layout)."""
    prefix = next(
        (
            p
            for p in ("params/img/", "params/", "opt/target/", "")
            if f"{p}embedding/kernel" in arrays
        ),
        "",
    )
    a = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    leftovers = {k: v for k, v in arrays.items() if not k.startswith(prefix)}
    big_vision = (
        prefix.startswith("params/")
        or "pos_embedding" in a
        or any(k.startswith("Transformer/encoderblock/") for k in a)
        or any("MultiHeadDotProductAttention_0" in k for k in a)
    )
    if not big_vision:
        return a, leftovers, "vit_npz"
    params = {}
    for k, v in a.items():
        if k.startswith("Transformer/encoderblock/"):
            rest = _big_vision_block_name(k[len("Transformer/encoderblock/") :])
            for i in range(v.shape[0]):  # scanned: leading depth axis
                params[f"{_BLK}{i}/{rest}"] = v[i]
            continue
        m = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.*)", k)
        if m:
            params[f"{_BLK}{m.group(1)}/{_big_vision_block_name(m.group(2))}"] = v
        elif k == "pos_embedding":
            params[POSEMB] = v
        else:
            params[k] = v
    return params, leftovers, "big_vision"


def _big_vision_block_name(rest: str) -> str:
    """big_vision block names -> original ViT names (``_0`` attention, ``_1`` LN, ``_0`` MLP)."""
    rest = rest.replace("MultiHeadDotProductAttention_0/", "MultiHeadDotProductAttention_1/")
    rest = rest.replace("LayerNorm_1/", "LayerNorm_2/")
    return rest.replace("MlpBlock_0/", "MlpBlock_3/")


def _bit_npz(arrays: Arrays) -> tuple[Arrays, Arrays]:
    prefix = next(k for k in arrays if k.endswith("root_block/standardized_conv2d/kernel"))
    prefix = prefix[: -len("root_block/standardized_conv2d/kernel")]
    params, leftovers = {}, {}
    for k, v in arrays.items():
        if not k.startswith(prefix):
            leftovers[k] = v
            continue
        k = k[len(prefix) :]
        if k.endswith("group_norm/gamma"):
            k, v = k[: -len("gamma")] + "scale", v.reshape(-1)
        elif k.endswith("group_norm/beta"):
            k, v = k[: -len("beta")] + "bias", v.reshape(-1)
        params[k] = v
    return params, leftovers


def _has(arrays: Mapping[str, np.ndarray], *keys: str) -> bool:
    return all(k in arrays for k in keys)


def convert(arrays: Mapping[str, np.ndarray], path: str) -> Converted:
    """Detects the layout of a file's arrays and renames them to the project's names.

    Args:
      arrays: ``{file key: array}`` as read from the file.
      path: the file, for messages.

    Returns:
      The ``Converted`` params.

    Raises:
      ValueError: when no known layout matches (the caller adds the file name).
    """
    arrays = dict(arrays)
    config = {}
    if CONFIG_KEY in arrays:
        config = json.loads(str(arrays.pop(CONFIG_KEY)))
    # Wrappers: {"state_dict": ...} or {"model": ...} dicts, DataParallel's "module.".
    for wrapper in ("state_dict.", "model.", "module."):
        if arrays and all(k.startswith(wrapper) for k in arrays):
            arrays = _strip(arrays, wrapper)
    if any(k.endswith("root_block/standardized_conv2d/kernel") for k in arrays):
        params, left = _bit_npz(arrays)
        return Converted("resnet", "bit_npz", params, left, config)
    if _has(arrays, "stem.conv.weight") and any(k.startswith("stages.0.blocks.0.") for k in arrays):
        params, left = _timm_resnet(arrays)
        return Converted("resnet", "timm_resnetv2", params, left, config)
    if _has(arrays, "root.conv.weight", "body.block1.unit01.conv1.weight"):
        params, left = _AUTHORS_RESNET(arrays)
        return Converted("resnet", "authors_resnet", _fix_norm_names(params), left, config)
    if any(k.endswith("embedding/kernel") for k in arrays):
        params, left, layout = _vit_npz(arrays)
        return Converted("vit", layout, params, left, config)
    if _has(arrays, "patch_embed.proj.weight"):
        params, left = _timm_vit(arrays)
        return Converted("vit", "timm_vit", params, left, config)
    hf_prefix = next(
        (p for p in ("", "vit.") if f"{p}embeddings.patch_embeddings.projection.weight" in arrays),
        None,
    )
    if hf_prefix is not None:
        params, left = _hf_vit(_strip(arrays, hf_prefix) if hf_prefix else arrays)
        return Converted("vit", "hf_vit", params, left, config)
    if _has(arrays, "transformer.embeddings.patch_embeddings.weight"):
        params, left = _AUTHORS_VIT(arrays)
        return Converted("vit", "authors_vit", _fix_norm_names(params), left, config)
    sample = sorted(arrays)[:6]
    raise ValueError(
        "no known weight layout (original ViT/AugReg or big_vision .npz, timm or Hugging Face "
        f"ViT, BiT .npz, timm ResNetV2, the authors' ViT or ResNet); first keys: {sample}"
    )
