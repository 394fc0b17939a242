"""Independent numpy references for the tests: written from the papers, not from the library.

Nothing here imports pairviz_jax: a ViT forward pass, the authors' per-token
similarity loop, rollout as a loop over blocks, and OpenCV's INTER_CUBIC.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)


def layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_exact(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def vit_forward(params, image, *, patch, num_heads, class_token, keep_class_token, proj):
    """One image [H, W, C] through a pre-LN ViT; returns (tokens [K*K, E], attn [L, H, N, N])."""
    p = {k: np.asarray(v, np.float64) for k, v in _flat(params).items()}
    h, w, c = image.shape
    gh, gw = h // patch, w // patch
    x = image.reshape(gh, patch, gw, patch, c).transpose(0, 2, 1, 3, 4).reshape(gh * gw, -1)
    kernel = p["embedding/kernel"].reshape(-1, p["embedding/kernel"].shape[-1])
    x = x @ kernel + p["embedding/bias"]
    if class_token:
        x = np.concatenate([p["cls"][0], x], 0)
    x = x + p["Transformer/posembed_input/pos_embedding"][0]
    if class_token and not keep_class_token:
        x = x[1:]
    attn_all = []
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in p:
        b = f"Transformer/encoderblock_{i}/"
        y = layer_norm(x, {"scale": p[b + "LayerNorm_0/scale"], "bias": p[b + "LayerNorm_0/bias"]})
        a = b + "MultiHeadDotProductAttention_1/"
        q = np.einsum("nd,dhk->hnk", y, p[a + "query/kernel"]) + p[a + "query/bias"][:, None]
        k = np.einsum("nd,dhk->hnk", y, p[a + "key/kernel"]) + p[a + "key/bias"][:, None]
        v = np.einsum("nd,dhk->hnk", y, p[a + "value/kernel"]) + p[a + "value/bias"][:, None]
        logits = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        logits -= logits.max(-1, keepdims=True)
        att = np.exp(logits)
        att /= att.sum(-1, keepdims=True)
        attn_all.append(att)
        o = np.einsum("hnm,hmk->nhk", att, v)
        x = x + np.einsum("nhk,hkd->nd", o, p[a + "out/kernel"]) + p[a + "out/bias"]
        y = layer_norm(x, {"scale": p[b + "LayerNorm_2/scale"], "bias": p[b + "LayerNorm_2/bias"]})
        m = b + "MlpBlock_3/"
        y = gelu_exact(y @ p[m + "Dense_0/kernel"] + p[m + "Dense_0/bias"])
        x = x + y @ p[m + "Dense_1/kernel"] + p[m + "Dense_1/bias"]
        i += 1
    x = layer_norm(
        x,
        {"scale": p["Transformer/encoder_norm/scale"], "bias": p["Transformer/encoder_norm/bias"]},
    )
    if proj:
        x = x @ p["head/kernel"] + p["head/bias"]
    prefix = int(class_token and keep_class_token)
    return x[prefix:], np.stack(attn_all)


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


def spatial_similarity(tokens_a, tokens_b):
    """The authors' per-token loop (Stylianou et al. 2019): gamma_a, gamma_b, score."""
    a = np.asarray(tokens_a, np.float64)
    b = np.asarray(tokens_b, np.float64)
    pooled_a, pooled_b = a.mean(0), b.mean(0)
    na, nb = np.linalg.norm(pooled_a), np.linalg.norm(pooled_b)
    score = pooled_a @ pooled_b / (na * nb)
    a_n = a / na / a.shape[0]
    b_n = b / nb / b.shape[0]
    sim = np.zeros((a.shape[0], b.shape[0]))
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            sim[i, j] = a_n[i] @ b_n[j]
    return sim.sum(1), sim.sum(0), score


def rollout(attn, fusion="mean", start_layer=0):
    """attn [L, H, N, N] -> R [N, N], the authors' loop."""
    fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](attn, axis=1)
    eye = np.eye(fused.shape[-1])
    mats = [(f + eye) / (f + eye).sum(-1, keepdims=True) for f in fused]
    r = mats[start_layer]
    for m in mats[start_layer + 1 :]:
        r = m @ r
    return r


def _keys(x, a):
    x = np.abs(x)
    return np.where(
        x <= 1,
        (a + 2) * x**3 - (a + 3) * x**2 + 1,
        np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
    )


def cubic_matrix(n_in, n_out, a=-0.75):
    """OpenCV INTER_CUBIC as a matrix: half-pixel centres, replicated border."""
    w = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        f = math.floor(src)
        t = src - f
        for k in range(-1, 3):
            w[i, min(max(f + k, 0), n_in - 1)] += _keys(t - k, a)
    return w


def resize_cubic(m, size, a=-0.75):
    """[gh, gw] -> [H, W] with OpenCV's bicubic."""
    return cubic_matrix(m.shape[0], size[0], a) @ m @ cubic_matrix(m.shape[1], size[1], a).T
