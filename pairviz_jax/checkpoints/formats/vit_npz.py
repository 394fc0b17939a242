"""Flax ``.npz`` ViTs: the original ViT / AugReg release and big_vision (incl. SigLIP).

The original layout *is* the project's parameter names (``embedding``, ``cls``,
``Transformer/posembed_input/pos_embedding``,
``Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_1,
LayerNorm_2, MlpBlock_3}``, ``Transformer/encoder_norm``, ``head``); the
project's own ``save`` writes it, plus ``pairviz_config``/``pairviz_meta``.

big_vision differs in three ways: an optional ``params/`` (or, for two-tower
models such as SigLIP, ``params/img/``) prefix, ``pos_embedding`` at the top
without a class-token slot, and the blocks' modules numbered in creation order
(``MultiHeadDotProductAttention_0``, ``LayerNorm_1``, ``MlpBlock_0``), stacked
over a leading depth axis under ``Transformer/encoderblock/`` when the model
was scanned. SigLIP's image tower adds the attention-pooling head
``MAPHead_0/{probe, MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0}``
(project names already); its text tower (``params/txt/...``) and the logit
temperature and bias (``params/t``, ``params/b``) are dropped. big_vision's
MLP uses flax's default (tanh) GELU and its loader resamples position
embeddings with ``scipy.ndimage.zoom(order=1)``; both are the defaults for
big_vision files with a MAP head. Other ``.npz`` ViTs keep timm's reading
(exact GELU, half-pixel bilinear resampling), which the parity fixtures check.
"""

from __future__ import annotations

import re

from pairviz_jax.checkpoints.formats._common import BLK, POSEMB, Arrays, Converted

_BLOCK_BV = re.compile(r"Transformer/encoderblock(_\d+)?/MultiHeadDotProductAttention_0/")


def is_npz_vit(arrays: Arrays) -> bool:
    return any(k.endswith("embedding/kernel") for k in arrays)


def convert(arrays: Arrays) -> Converted:
    prefix = next(
        (
            p
            for p in ("params/img/", "params/", "opt/target/", "")
            if f"{p}embedding/kernel" in arrays
        ),
        "",
    )
    a = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    outside = {k: v for k, v in arrays.items() if not k.startswith(prefix)}
    big_vision = (
        prefix.startswith("params/")
        or "pos_embedding" in a
        or any(k.startswith("Transformer/encoderblock/") for k in a)
        or any(_BLOCK_BV.match(k) for k in a)
    )
    if not big_vision:
        return Converted("vit", "vit_npz", a, leftovers=outside, normalization="half")
    params = {}
    for k, v in a.items():
        if k.startswith("Transformer/encoderblock/"):
            rest = _block_name(k[len("Transformer/encoderblock/") :])
            for i in range(v.shape[0]):  # scanned: leading depth axis
                params[f"{BLK}{i}/{rest}"] = v[i]
            continue
        m = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.*)", k)
        if m:
            params[f"{BLK}{m.group(1)}/{_block_name(m.group(2))}"] = v
        elif k == "pos_embedding":
            params[POSEMB] = v
        else:
            params[k] = v
    dropped: dict[str, str] = {}
    leftovers = {}
    for k, v in outside.items():
        if prefix == "params/img/" and re.fullmatch(r"params/(txt/.*|t|b)", k):
            dropped[k] = "text tower and logit temperature/bias (not used)"
        else:
            leftovers[k] = v
    if "MAPHead_0/probe" in params:
        family = "siglip" if prefix == "params/img/" else "vit"
        return Converted(
            "vit",
            "big_vision",
            params,
            model_family=family,
            leftovers=leftovers,
            dropped=dropped,
            facts=dict(mlp_act="gelu_tanh", pool_type="map", layer_norm_eps=1e-6),
            posemb_prefix=0,
            interpolation="zoom",
            normalization="half",
        )
    return Converted(
        "vit",
        "big_vision",
        params,
        leftovers=leftovers,
        dropped=dropped,
        posemb_prefix=0 if POSEMB in params and "pos_embedding" in a else None,
        normalization="half",
    )


def _block_name(rest: str) -> str:
    """big_vision block names -> original ViT names (``_0`` attention, ``_1`` LN, ``_0`` MLP)."""
    rest = rest.replace("MultiHeadDotProductAttention_0/", "MultiHeadDotProductAttention_1/")
    rest = rest.replace("LayerNorm_1/", "LayerNorm_2/")
    return rest.replace("MlpBlock_0/", "MlpBlock_3/")
