"""OpenAI CLIP and OpenCLIP state dicts (``visual.*``; the text tower is dropped).

Keys (OpenAI's ``VisionTransformer``, kept by OpenCLIP): ``visual.conv1``
(no bias), ``visual.class_embedding`` [D], ``visual.positional_embedding``
[1 + M*M, D], ``visual.ln_pre``, ``visual.transformer.resblocks.{i}.ln_1``,
``attn.in_proj_weight`` [3D, D] / ``in_proj_bias`` (q, k, v stacked),
``attn.out_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``, OpenCLIP's
optional layer scale ``ls_1.gamma``/``ls_2.gamma``, ``visual.ln_post`` and
``visual.proj`` [D, E]. The embedding is ``ln_post(class token) @ proj``.

The activation is not in the file. OpenAI's models use QuickGELU, most
OpenCLIP models GELU (OpenCLIP's default; its ``-quickgelu`` models and its
``openai`` weights QuickGELU). A state dict taken from OpenAI's TorchScript
archive still holds ``input_resolution``/``context_length``/``vocab_size``
and is read as QuickGELU; otherwise GELU is assumed (``describe`` says so)
and ``model_from(path, mlp_act="quick_gelu")`` overrides. The heads are not
in the file either: the standard table (width 768 -> 12, 1024 -> 16, 1280 ->
16) unless ``num_heads`` is given. OpenCLIP resamples position embeddings
bicubically with antialiasing (``resize_pos_embed``).
"""

from __future__ import annotations

from pairviz_jax.checkpoints.formats._common import (
    MHA,
    POSEMB,
    Arrays,
    Converted,
    Renamer,
    as_posemb,
    as_token,
    block_rules,
    conv,
    drop,
    has,
    linear,
    ln,
    split_fused_qkv,
    strip,
    zero_patch_bias,
)

_OPENAI_MARKS = ("input_resolution", "context_length", "vocab_size")
_RB = r"transformer\.resblocks\."
_QKV = rf"Transformer/encoderblock_\1/{MHA}/qkv/"
_CLIP = Renamer(
    [
        (r"conv1\.weight", "embedding/kernel", conv),
        (r"class_embedding", "cls", as_token),
        (r"positional_embedding", POSEMB, as_posemb),
        (r"ln_pre\.(?P<ln>weight|bias)", ln("Transformer/ln_pre"), None),
        (_RB + r"(\d+)\.attn\.in_proj_weight", _QKV + "kernel", linear),
        (_RB + r"(\d+)\.attn\.in_proj_bias", _QKV + "bias", None),
        *block_rules(
            _RB,
            {
                r"ln_1": "LayerNorm_0",
                r"attn\.out_proj": f"{MHA}/out",
                r"ls_1\.gamma": "ls1",
                r"ln_2": "LayerNorm_2",
                r"mlp\.c_fc": "MlpBlock_3/Dense_0",
                r"mlp\.c_proj": "MlpBlock_3/Dense_1",
                r"ls_2\.gamma": "ls2",
            },
        ),
        (r"ln_post\.(?P<ln>weight|bias)", ln("Transformer/encoder_norm"), None),
        (r"proj", "head/kernel", None),  # already [D, E]: x @ proj
    ]
)


def is_clip(arrays: Arrays) -> bool:
    return has(arrays, "visual.conv1.weight", "visual.class_embedding")


def convert(arrays: Arrays) -> Converted:
    dropped: dict[str, str] = {}
    openai = any(k in arrays for k in _OPENAI_MARKS)
    arrays = drop(arrays, r"(?!visual\.).*", "text tower and logit scale (not used)", dropped)
    params, leftovers = _CLIP(strip(arrays, "visual."))
    split_fused_qkv(params)
    zero_patch_bias(params)
    facts = dict(
        pool_type="tok",
        ln_pre=True,
        layer_norm_eps=1e-5,
        proj_bias=False,
        mlp_act="quick_gelu" if openai else "gelu",
    )
    return Converted(
        "vit",
        "openai_clip" if openai else "open_clip",
        params,
        model_family="clip",
        leftovers=leftovers,
        dropped=dropped,
        facts=facts,
        assumed=() if openai else ("mlp_act",),
        posemb_prefix=1,
        interpolation="bicubic_antialias",
        normalization="clip",
    )
