"""Hugging Face transformers checkpoints: ViT, Dinov2 (with registers), CLIP and SigLIP.

Files keep transformers' saved names (transformers >= 5 renames some inside
the model and maps them back on saving; both spellings are read). A model
folder's ``config.json`` adds what the shapes cannot tell (heads, LayerNorm
epsilon, activation, layer-scale value, image size) and is checked against
the shapes; ``preprocessor_config.json``, when present, gives the input
normalisation.

- ``Dinov2Model`` / ``Dinov2WithRegistersModel``: ``embeddings.{cls_token,
  mask_token, register_tokens, position_embeddings,
  patch_embeddings.projection}``, ``encoder.layer.{i}.{norm1,
  attention.attention.{query,key,value}, attention.output.dense,
  layer_scale1.lambda1, norm2, mlp.fc1, mlp.fc2 | mlp.weights_in,
  mlp.weights_out, layer_scale2.lambda1}``, ``layernorm``. Embedding: the
  normed class token (``pooler_output``). Position embeddings: bicubic to
  (H/14, W/14) without antialiasing (Dinov2), with it (WithRegisters).
- ``CLIPVisionModelWithProjection`` (or a whole ``CLIPModel``):
  ``vision_model.embeddings.{class_embedding, patch_embedding (no bias),
  position_embedding}``, ``vision_model.pre_layrnorm`` (sic),
  ``vision_model.encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj,
  layer_norm2, mlp.fc1, mlp.fc2}``, ``vision_model.post_layernorm``,
  ``visual_projection`` (no bias).
- ``SiglipVisionModel`` (or a whole ``SiglipModel``): the same encoder names,
  a patch bias, no class token, ``post_layernorm`` and the attention-pooling
  head ``head.{probe, attention.in_proj_weight/bias, attention.out_proj,
  layernorm, mlp.fc1, mlp.fc2}``.
- ``ViTModel`` / ``ViTForImageClassification``: as before (``layernorm_before``,
  ``intermediate.dense``, its tanh ``pooler`` is ``pre_logits``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pairviz_jax.checkpoints.formats import dinov2
from pairviz_jax.checkpoints.formats._common import (
    BLK,
    MHA,
    POSEMB,
    REG,
    Arrays,
    Converted,
    LayoutError,
    Renamer,
    as_posemb,
    as_token,
    block_rules,
    conv,
    drop,
    linear,
    ln,
    split_fused_qkv,
    strip,
    zero_patch_bias,
)

# ------------------------------------------------------------------------------ ViTModel

_HF_L = r"encoder\.layer\."
_VIT = Renamer(
    [
        (r"embeddings\.patch_embeddings\.projection\.weight", "embedding/kernel", conv),
        (r"embeddings\.patch_embeddings\.projection\.bias", "embedding/bias", None),
        (r"embeddings\.cls_token", "cls", None),
        (r"embeddings\.position_embeddings", POSEMB, None),
        *block_rules(
            _HF_L,
            {
                r"layernorm_before": "LayerNorm_0",
                r"layernorm_after": "LayerNorm_2",
                r"attention\.attention\.query": f"{MHA}/query",
                r"attention\.attention\.key": f"{MHA}/key",
                r"attention\.attention\.value": f"{MHA}/value",
                r"attention\.output\.dense": f"{MHA}/out",
                r"intermediate\.dense": "MlpBlock_3/Dense_0",
                r"output\.dense": "MlpBlock_3/Dense_1",
            },
        ),
        # transformers >= 5 names inside the model (its files keep the names above).
        *block_rules(
            r"layers\.",
            {
                r"layernorm_before": "LayerNorm_0",
                r"layernorm_after": "LayerNorm_2",
                r"attention\.q_proj": f"{MHA}/query",
                r"attention\.k_proj": f"{MHA}/key",
                r"attention\.v_proj": f"{MHA}/value",
                r"attention\.o_proj": f"{MHA}/out",
                r"mlp\.fc1": "MlpBlock_3/Dense_0",
                r"mlp\.fc2": "MlpBlock_3/Dense_1",
            },
        ),
        (r"layernorm\.(?P<ln>weight|bias)", ln("Transformer/encoder_norm"), None),
        # The tanh pooler on the class token is the original ViT's `pre_logits`.
        (r"pooler\.dense\.weight", "pre_logits/kernel", linear),
        (r"pooler\.dense\.bias", "pre_logits/bias", None),
        (r"classifier\.weight", "head/kernel", linear),
        (r"classifier\.bias", "head/bias", None),
    ]
)


def vit_prefix(arrays: Arrays) -> str | None:
    key = "embeddings.patch_embeddings.projection.weight"
    return next((p for p in ("", "vit.") if p + key in arrays), None)


def convert_vit(arrays: Arrays) -> Converted:
    prefix = vit_prefix(arrays) or ""
    params, leftovers = _VIT(strip(arrays, prefix) if prefix else arrays)
    return Converted("vit", "hf_vit", params, leftovers=leftovers)


# ------------------------------------------------------------------------------ Dinov2

_DINO = Renamer(
    [
        (r"embeddings\.patch_embeddings\.projection\.weight", "embedding/kernel", conv),
        (r"embeddings\.patch_embeddings\.projection\.bias", "embedding/bias", None),
        (r"embeddings\.cls_token", "cls", None),
        (r"embeddings\.register_tokens", REG, None),
        (r"embeddings\.position_embeddings", POSEMB, None),
        *block_rules(
            _HF_L,
            {
                r"norm1": "LayerNorm_0",
                r"attention\.(?:attention\.query|q_proj)": f"{MHA}/query",
                r"attention\.(?:attention\.key|k_proj)": f"{MHA}/key",
                r"attention\.(?:attention\.value|v_proj)": f"{MHA}/value",
                r"attention\.(?:output\.dense|o_proj)": f"{MHA}/out",
                r"layer_scale1\.lambda1": "ls1",
                r"norm2": "LayerNorm_2",
                r"mlp\.(?:fc1|weights_in)": "MlpBlock_3/Dense_0",
                r"mlp\.(?:fc2|weights_out|down_proj)": "MlpBlock_3/Dense_1",
                r"mlp\.gate_proj": "MlpBlock_3/gate",
                r"mlp\.up_proj": "MlpBlock_3/up",
                r"layer_scale2\.lambda1": "ls2",
            },
        ),
        (r"layernorm\.(?P<ln>weight|bias)", ln("Transformer/encoder_norm"), None),
    ]
)


def dino_prefix(arrays: Arrays) -> str | None:
    for p in ("", "dinov2."):
        if p + "embeddings.patch_embeddings.projection.weight" in arrays and (
            p + "encoder.layer.0.norm1.weight" in arrays or p + "embeddings.mask_token" in arrays
        ):
            return p
    return None


def convert_dinov2(arrays: Arrays) -> Converted:
    dropped: dict[str, str] = {}
    prefix = dino_prefix(arrays) or ""
    if prefix:
        arrays = drop(arrays, r"classifier\..*", "linear-probe classifier (not used)", dropped)
        arrays = strip(arrays, prefix)
    why = "mask token (masked-image training only)"
    arrays = drop(arrays, r"embeddings\.mask_token", why, dropped)
    params, leftovers = _DINO(arrays)
    # transformers >= 5 in-model SwiGLU: gate and up projections -> Dense_0 = [gate, up].
    for key in [k for k in params if "/MlpBlock_3/gate/" in k]:
        up = key.replace("/gate/", "/up/")
        params[key.replace("/gate/", "/Dense_0/")] = np.concatenate(
            [params.pop(key), params.pop(up)], axis=-1
        )
    return dinov2.converted("hf_dinov2", params, leftovers, dropped, plain="bicubic")


# ------------------------------------------------------------------------------ CLIP, SigLIP

_ENC = r"encoder\.layers\."
_MAP_ATT = "MAPHead_0/MultiHeadDotProductAttention_0/"
_CLIP_LIKE = Renamer(
    [
        (r"embeddings\.patch_embedding\.weight", "embedding/kernel", conv),
        (r"embeddings\.patch_embedding\.bias", "embedding/bias", None),
        (r"embeddings\.class_embedding", "cls", as_token),
        (r"embeddings\.position_embedding\.weight", POSEMB, as_posemb),
        (r"pre_layr?norm\.(?P<ln>weight|bias)", ln("Transformer/ln_pre"), None),
        *block_rules(
            _ENC,
            {
                r"layer_norm1": "LayerNorm_0",
                r"self_attn\.q_proj": f"{MHA}/query",
                r"self_attn\.k_proj": f"{MHA}/key",
                r"self_attn\.v_proj": f"{MHA}/value",
                r"self_attn\.out_proj": f"{MHA}/out",
                r"layer_norm2": "LayerNorm_2",
                r"mlp\.fc1": "MlpBlock_3/Dense_0",
                r"mlp\.fc2": "MlpBlock_3/Dense_1",
            },
        ),
        (r"post_layernorm\.(?P<ln>weight|bias)", ln("Transformer/encoder_norm"), None),
        (r"visual_projection\.weight", "head/kernel", linear),
        # SigLIP's attention pooling (torch nn.MultiheadAttention inside).
        (r"head\.probe", "MAPHead_0/probe", None),
        (r"head\.attention\.in_proj_weight", _MAP_ATT + "qkv/kernel", linear),
        (r"head\.attention\.in_proj_bias", _MAP_ATT + "qkv/bias", None),
        (r"head\.attention\.out_proj\.weight", _MAP_ATT + "out/kernel", linear),
        (r"head\.attention\.out_proj\.bias", _MAP_ATT + "out/bias", None),
        (r"head\.layernorm\.(?P<ln>weight|bias)", ln("MAPHead_0/LayerNorm_0"), None),
        (r"head\.mlp\.fc1\.weight", "MAPHead_0/MlpBlock_0/Dense_0/kernel", linear),
        (r"head\.mlp\.fc1\.bias", "MAPHead_0/MlpBlock_0/Dense_0/bias", None),
        (r"head\.mlp\.fc2\.weight", "MAPHead_0/MlpBlock_0/Dense_1/kernel", linear),
        (r"head\.mlp\.fc2\.bias", "MAPHead_0/MlpBlock_0/Dense_1/bias", None),
    ]
)


def clip_like_prefix(arrays: Arrays) -> str | None:
    for p in ("vision_model.", ""):
        if p + "embeddings.patch_embedding.weight" in arrays and any(
            k.startswith(p + "encoder.layers.") for k in arrays
        ):
            return p
    return None


def convert_clip_like(arrays: Arrays) -> Converted:
    """``CLIPVisionModelWithProjection``/``CLIPModel`` or ``SiglipVisionModel``/``SiglipModel``."""
    dropped: dict[str, str] = {}
    prefix = clip_like_prefix(arrays) or ""
    if prefix:
        keep = rf"{prefix}.*|visual_projection\.weight"
        arrays = drop(arrays, rf"(?!{keep}).*", "text tower and logit scale (not used)", dropped)
        arrays = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in arrays.items()}
    arrays = drop(arrays, r"embeddings\.position_ids", "position ids (a constant buffer)", dropped)
    params, leftovers = _CLIP_LIKE(arrays)
    split_fused_qkv(params)
    if "cls" in params:  # CLIP
        zero_patch_bias(params)
        return Converted(
            "vit",
            "hf_clip",
            params,
            model_family="clip",
            leftovers=leftovers,
            dropped=dropped,
            facts=dict(pool_type="tok", ln_pre=True, layer_norm_eps=1e-5, proj_bias=False),
            posemb_prefix=1,
            interpolation="bicubic",
            normalization="clip",
        )
    facts: dict[str, Any] = dict(mlp_act="gelu_tanh", layer_norm_eps=1e-6)
    facts["pool_type"] = "map" if "MAPHead_0/probe" in params else "gap"
    return Converted(
        "vit",
        "hf_siglip",
        params,
        model_family="siglip",
        leftovers=leftovers,
        dropped=dropped,
        facts=facts,
        posemb_prefix=0,
        interpolation="bicubic",
        normalization="half",
    )


# ------------------------------------------------------------------------------ config.json

MODEL_TYPES = {
    "hf_vit": ("vit",),
    "hf_dinov2": ("dinov2", "dinov2_with_registers"),
    "hf_clip": ("clip", "clip_vision_model"),
    "hf_siglip": ("siglip", "siglip_vision_model"),
}
# transformers' hidden_act -> ViT.mlp_act
_ACTS = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "quick_gelu": "quick_gelu",
}


def vision_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The vision part of a config.json (``vision_config`` of a two-tower model)."""
    sub = config.get("vision_config")
    return dict(sub) if isinstance(sub, Mapping) else dict(config)


def apply_config(conv_: Converted, config: Mapping[str, Any], preprocessor: Mapping | None):
    """Adds config.json's settings to ``conv_.facts`` after checking them against the shapes.

    Raises:
      LayoutError: a model type of another layout, or a setting the weights contradict.
    """
    model_type = config.get("model_type")
    allowed = MODEL_TYPES.get(conv_.layout, ())
    if model_type is not None and model_type not in allowed:
        raise LayoutError(
            f"config.json says model_type {model_type!r} but the weights are a {conv_.layout} "
            f"layout (expected model_type {' or '.join(map(repr, allowed)) or 'none'})"
        )
    cfg = vision_config(config)
    p = conv_.params
    kernel = p.get("embedding/kernel")
    depth = len({k.split("/")[1] for k in p if k.startswith(BLK)})

    def check(name: str, said: Any, found: Any) -> None:
        if said is not None and found is not None and said != found:
            raise LayoutError(f"config.json says {name}={said!r} but the weights have {found!r}")

    if kernel is not None:
        check("hidden_size", cfg.get("hidden_size"), int(kernel.shape[-1]))
        patch = cfg.get("patch_size")
        if patch is not None:
            patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
            found = tuple(int(d) for d in kernel.shape[:2])
            check("patch_size", tuple(int(q) for q in patch), found)
    check("num_hidden_layers", cfg.get("num_hidden_layers"), depth or None)
    registers = int(p[REG].shape[1]) if REG in p else 0
    if conv_.layout == "hf_dinov2":
        check("num_register_tokens", cfg.get("num_register_tokens", 0), registers)
    # A two-tower model's projection size is its own, not its vision_config's.
    proj = config.get("projection_dim") if "vision_config" in config else cfg.get("projection_dim")
    if proj is not None and "head/kernel" in p:
        check("projection_dim", proj, int(p["head/kernel"].shape[-1]))
    facts = conv_.facts
    if "num_attention_heads" in cfg:
        facts["num_heads"] = int(cfg["num_attention_heads"])
    if "layer_norm_eps" in cfg:
        facts["layer_norm_eps"] = float(cfg["layer_norm_eps"])
    act = cfg.get("hidden_act")
    if act is not None:
        if act not in _ACTS:
            raise LayoutError(
                f"config.json's hidden_act {act!r} is not supported (known: {sorted(_ACTS)})"
            )
        facts["mlp_act"] = _ACTS[act]
    if cfg.get("use_swiglu_ffn"):
        facts["mlp_act"] = "swiglu"
    if "layerscale_value" in cfg and any(k.endswith("/ls1") for k in p):
        facts["layer_scale"] = float(cfg["layerscale_value"])
    size = cfg.get("image_size")
    if size is not None:
        conv_.native_size = (size, size) if isinstance(size, int) else tuple(size)
    if preprocessor and preprocessor.get("do_normalize", True):
        mean, std = preprocessor.get("image_mean"), preprocessor.get("image_std")
        if mean is not None and std is not None and len(mean) == len(std) == 3:
            conv_.normalization = (tuple(map(float, mean)), tuple(map(float, std)))
