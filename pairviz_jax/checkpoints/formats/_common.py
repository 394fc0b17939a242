"""What every layout module shares: the ``Converted`` result, renaming rules, constants.

A layout module turns ``{file key: array}`` into the project's parameter names
(``pairviz_jax.models.ViT`` with original ViT / AugReg names, ``ResNet`` with
BiT names) and says what the file's family fixes beyond the shapes: model
settings (``facts``), the position-embedding resampling convention and the
input normalisation. Torch layouts keep attention weights fused over heads
(``[D, D]``); the merge splits them with the model's number of heads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]

POSEMB = "Transformer/posembed_input/pos_embedding"
REG = "Transformer/reg"
CONFIG_KEY = "pairviz_config"
META_KEY = "pairviz_meta"
BLK = "Transformer/encoderblock_"
MHA = "MultiHeadDotProductAttention_1"

# name -> (mean, std) per RGB channel of [0, 1] images.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    # [-1, 1]: the original ViT / AugReg, big_vision and SigLIP.
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@dataclass
class Converted:
    """A file's arrays in the project's names, and what its family fixes.

    Attributes:
      family: ``"vit"`` or ``"resnet"`` (the architecture).
      layout: the key layout (``timm_vit``, ``dinov2_hub``, ``hf_clip``, ...).
      params: ``{"/"-joined param name: array}``.
      model_family: where the weights come from: ``dinov2``, ``clip``,
        ``siglip``, ``deit``, ``vit``, ``authors``, ``bit``.
      leftovers: file keys no rule placed (reported as unexpected).
      dropped: file keys deliberately not loaded -> why (a text tower, an
        unused mask token, a classifier).
      config: model settings stored by ``save`` (``pairviz_config``).
      facts: ``ViT``/``ResNet`` settings the format fixes beyond the shapes
        (``mlp_act``, ``layer_norm_eps``, ``pool_type``, ``num_heads``, ...).
      assumed: the names in ``facts`` that are a documented default, not
        something the file says (e.g. OpenCLIP's activation).
      posemb_prefix: slots in front of the position grid (class and
        distillation tokens), None when the count decides.
      interpolation: the family's position-embedding resampling (``_interp``).
      normalization: a ``NORMALIZATIONS`` name, ``(mean, std)``, or None.
      native_size: (H, W) the file was made for, if known (config.json).
    """

    family: str
    layout: str
    params: Arrays
    model_family: str = "vit"
    leftovers: Arrays = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    assumed: tuple[str, ...] = ()
    posemb_prefix: int | None = None
    interpolation: str = "linear"
    normalization: Any = None
    native_size: tuple[int, int] | None = None


class LayoutError(ValueError):
    """A file's keys or config do not make a consistent checkpoint (the caller adds the path)."""


def conv(w: np.ndarray) -> np.ndarray:
    """torch conv weight [O, I, kh, kw] -> flax kernel [kh, kw, I, O]."""
    return np.transpose(w, (2, 3, 1, 0))


def linear(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> flax kernel [in, out]."""
    return np.transpose(w)


def as_token(w: np.ndarray) -> np.ndarray:
    """A token stored as [D] or [1, D] -> [1, 1, D]."""
    return np.reshape(w, (1, 1, -1))


def as_posemb(w: np.ndarray) -> np.ndarray:
    """A position table [N, D] (or [1, N, D]) -> [1, N, D]."""
    return np.reshape(w, (1, -1, w.shape[-1]))


def strip(arrays: Mapping[str, np.ndarray], prefix: str) -> Arrays:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in arrays.items()}


def ln(name: str) -> str:
    """Template for a LayerNorm/GroupNorm whose torch ``weight`` is flax ``scale``."""
    return name + r"/\g<ln>"


def fix_norm_names(params: Arrays) -> Arrays:
    """Renames torch norm ``weight`` to flax ``scale`` (the rules' ``(?P<ln>...)`` groups)."""
    out = {}
    for k, v in params.items():
        if k.endswith("/weight"):
            k = k[: -len("weight")] + "scale"
        out[k] = v
    return out


Rule = tuple[str, str, Callable[[np.ndarray], np.ndarray] | None]


class Renamer:
    """Applies ``(regex, template, transform)`` rules; unmatched keys are leftovers."""

    def __init__(self, rules: list[Rule]):
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
        return fix_norm_names(params), leftovers


def block_rules(prefix: str, names: Mapping[str, str]) -> list[Rule]:
    """Rules for one pre-LN block family: ``names`` maps a torch sub-path to a project one.

    ``names`` keys are regexes after ``{prefix}(\\d+)\\.`` ending before
    ``.weight``/``.bias``; values are the project sub-paths. Norms (values
    ending in ``LayerNorm_0``/``LayerNorm_2``) get ``scale``; linears get a
    transposed kernel.
    """
    rules: list[Rule] = []
    for src, dst in names.items():
        head = prefix + r"(\d+)\." + src + r"\."
        if "LayerNorm" in dst:
            rules.append((head + r"(?P<ln>weight|bias)", BLK + r"\1/" + ln(dst), None))
        elif dst.endswith(("ls1", "ls2")):
            rules.append((prefix + r"(\d+)\." + src, BLK + r"\1/" + dst, None))
        else:
            rules.append((head + "weight", BLK + r"\1/" + dst + "/kernel", linear))
            rules.append((head + "bias", BLK + r"\1/" + dst + "/bias", None))
    return rules


def split_fused_qkv(params: Arrays) -> Arrays:
    """Splits ``{attention}/qkv/kernel [D, 3D]`` and ``bias [3D]`` into query, key and value."""
    for key in [k for k in params if k.endswith(("/qkv/kernel", "/qkv/bias"))]:
        value = params.pop(key)
        module, kind = key.rsplit("/qkv/", 1)
        for name, part in zip(("query", "key", "value"), np.split(value, 3, axis=-1), strict=True):
            params[f"{module}/{name}/{kind}"] = part
    return params


def zero_patch_bias(params: Arrays) -> None:
    """CLIP's patch convolution has no bias; the model's is zeros (the same function)."""
    if "embedding/kernel" in params and "embedding/bias" not in params:
        params["embedding/bias"] = np.zeros(params["embedding/kernel"].shape[-1], np.float32)


def has(arrays: Mapping[str, Any], *keys: str) -> bool:
    return all(k in arrays for k in keys)


def any_match(arrays: Mapping[str, Any], pattern: str) -> bool:
    rx = re.compile(pattern)
    return any(rx.fullmatch(k) for k in arrays)


def drop(arrays: Arrays, pattern: str, why: str, dropped: dict[str, str]) -> Arrays:
    """Moves the keys matching ``pattern`` out of ``arrays`` into ``dropped`` with a reason."""
    rx = re.compile(pattern)
    kept = {}
    for k, v in arrays.items():
        if rx.fullmatch(k):
            dropped[k] = why
        else:
            kept[k] = v
    return kept
