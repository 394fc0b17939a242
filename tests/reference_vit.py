"""An independent numpy ViT with the features of DINOv2, CLIP, SigLIP and DeiT.

Written from the models' papers and reference code, not from pairviz_jax: float64,
one image at a time, explicit loops over blocks. Used to check the flax ViT's
layer scale, registers, distillation token, ln_pre, activations and pooling.
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference import _flat, gelu_exact, layer_norm


def act(x, kind):
    if kind == "gelu":
        return gelu_exact(x)
    if kind == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    raise ValueError(kind)


def _mlp(y, p, m, kind):
    h = y @ p[m + "Dense_0/kernel"] + p[m + "Dense_0/bias"]
    if kind == "swiglu":
        x1, x2 = np.split(h, 2, axis=-1)
        h = x1 / (1 + np.exp(-x1)) * x2
    else:
        h = act(h, kind)
    return h @ p[m + "Dense_1/kernel"] + p[m + "Dense_1/bias"]


def _attention(xq, xkv, p, a):
    q = np.einsum("nd,dhk->hnk", xq, p[a + "query/kernel"]) + p[a + "query/bias"][:, None]
    k = np.einsum("nd,dhk->hnk", xkv, p[a + "key/kernel"]) + p[a + "key/bias"][:, None]
    v = np.einsum("nd,dhk->hnk", xkv, p[a + "value/kernel"]) + p[a + "value/bias"][:, None]
    logits = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    att = np.exp(logits)
    att /= att.sum(-1, keepdims=True)
    o = np.einsum("hnm,hmk->nhk", att, v)
    return np.einsum("nhk,hkd->nd", o, p[a + "out/kernel"]) + p[a + "out/bias"], att


def _ln(x, p, name, eps):
    return layer_norm(x, {"scale": p[name + "/scale"], "bias": p[name + "/bias"]}, eps)


def vit_forward(params, image, *, patch, cfg):
    """One image [H, W, C] -> (embedding [E], patch tokens [N, E'], attention [L, H, N', N']).

    ``cfg``: class_token, distill_token, num_registers, layer_scale (bool),
    ln_pre, eps, act, pool ("gap" | "tok" | "gap_tok" | "map"), proj, proj_bias.
    """
    p = {k: np.asarray(v, np.float64) for k, v in _flat(params).items()}
    eps, kind = cfg.get("eps", 1e-6), cfg.get("act", "gelu")
    h, w, c = image.shape
    gh, gw = h // patch, w // patch
    x = image.reshape(gh, patch, gw, patch, c).transpose(0, 2, 1, 3, 4).reshape(gh * gw, -1)
    kernel = p["embedding/kernel"].reshape(-1, p["embedding/kernel"].shape[-1])
    x = x @ kernel + p["embedding/bias"]
    front = []
    if cfg.get("class_token"):
        front.append(p["cls"][0])
    if cfg.get("distill_token"):
        front.append(p["dist"][0])
    x = np.concatenate([*front, x], 0) + p["Transformer/posembed_input/pos_embedding"][0]
    n_front = len(front)
    if cfg.get("num_registers"):
        x = np.concatenate([x[:n_front], p["Transformer/reg"][0], x[n_front:]], 0)
    if cfg.get("ln_pre"):
        x = _ln(x, p, "Transformer/ln_pre", eps)
    attn_all = []
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in p:
        b = f"Transformer/encoderblock_{i}/"
        o, att = _attention(
            *(2 * [_ln(x, p, b + "LayerNorm_0", eps)]), p, b + "MultiHeadDotProductAttention_1/"
        )
        attn_all.append(att)
        x = x + (o * p[b + "ls1"] if cfg.get("layer_scale") else o)
        m = _mlp(_ln(x, p, b + "LayerNorm_2", eps), p, b + "MlpBlock_3/", kind)
        x = x + (m * p[b + "ls2"] if cfg.get("layer_scale") else m)
        i += 1
    x = _ln(x, p, "Transformer/encoder_norm", eps)
    n_prefix = n_front + cfg.get("num_registers", 0)
    pool, proj = cfg.get("pool", "gap"), cfg.get("proj")

    def project(y):
        if not proj:
            return y
        return y @ p["head/kernel"] + (p["head/bias"] if cfg.get("proj_bias", True) else 0)

    if pool == "map":
        mh = "MAPHead_0/"
        y, _ = _attention(p[mh + "probe"][0], x, p, mh + "MultiHeadDotProductAttention_0/")
        y = y + _mlp(_ln(y, p, mh + "LayerNorm_0", eps), p, mh + "MlpBlock_0/", kind)
        return project(y[0]), x[n_prefix:], np.stack(attn_all)
    tokens = project(x)
    gap = tokens[n_prefix:].mean(0)
    tok = tokens[:n_front].mean(0) if n_front else None
    emb = {"gap": gap, "tok": tok}.get(pool)
    if pool == "gap_tok":
        emb = np.concatenate([tok, gap])
    return emb, tokens[n_prefix:], np.stack(attn_all)
