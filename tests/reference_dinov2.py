"""A NumPy DINOv2 forward on the original torch-hub state dict (an independent reference).

Written from the DINOv2 paper's architecture (pre-norm blocks, layer scale, exact GELU) in
float64: no torch, no JAX, no project code. The position embedding is interpolated with
``reference_interp.dinov2_pos_embed`` in either convention.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tests.reference_interp import dinov2_pos_embed

try:
    from scipy.special import erf
except ImportError:  # scipy comes with scikit-image / scikit-learn; this is the fallback
    import math

    erf = np.vectorize(math.erf, otypes=[np.float64])


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def forward(
    params: Mapping[str, np.ndarray],
    images: np.ndarray,
    heads: int,
    offset: float | None = None,
    eps: float = 1e-6,
) -> dict[str, np.ndarray]:
    """DINOv2 on normalised images.

    Args:
      params: hub-layout weights (``cls_token``, ``pos_embed``, ``blocks.{i}.attn.qkv``, ...).
      images: [B, H, W, 3] normalised images; H and W multiples of the patch.
      heads: attention heads.
      offset: position interpolation: None (Hugging Face, by size) or 0.1 (original DINOv2).
      eps: LayerNorm epsilon.

    Returns:
      float64 ``blocks`` [B, L, 1 + N, D], ``attention`` [B, L, heads, 1 + N, 1 + N],
      ``final`` [B, 1 + N, D].
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    w = p["patch_embed.proj.weight"]  # [D, 3, P, P]
    d, patch = w.shape[0], w.shape[-1]
    x = np.asarray(images, np.float64)
    b, h, wd, _ = x.shape
    gh, gw = h // patch, wd // patch
    cells = x.reshape(b, gh, patch, gw, patch, 3).transpose(0, 1, 3, 5, 2, 4)
    tokens = cells.reshape(b, gh * gw, -1) @ w.reshape(d, -1).T + p["patch_embed.proj.bias"]
    cls = np.broadcast_to(p["cls_token"], (b, 1, d))
    x = np.concatenate([cls, tokens], axis=1) + dinov2_pos_embed(p["pos_embed"], (gh, gw), offset)
    depth = 1 + max(int(k.split(".")[1]) for k in p if k.startswith("blocks."))
    hd = d // heads
    blocks, attention = [], []
    for i in range(depth):
        q = f"blocks.{i}."
        y = _ln(x, p[q + "norm1.weight"], p[q + "norm1.bias"], eps)
        qkv = y @ p[q + "attn.qkv.weight"].T + p[q + "attn.qkv.bias"]
        qkv = qkv.reshape(b, -1, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # [3, B, h, N, hd]
        s = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) / np.sqrt(hd)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, -1, d)
        x = x + p[q + "ls1.gamma"] * (o @ p[q + "attn.proj.weight"].T + p[q + "attn.proj.bias"])
        y = _ln(x, p[q + "norm2.weight"], p[q + "norm2.bias"], eps)
        y = y @ p[q + "mlp.fc1.weight"].T + p[q + "mlp.fc1.bias"]
        y = 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))
        x = x + p[q + "ls2.gamma"] * (y @ p[q + "mlp.fc2.weight"].T + p[q + "mlp.fc2.bias"])
        blocks.append(x)
        attention.append(a)
    final = _ln(x, p["norm.weight"], p["norm.bias"], eps)
    return {"blocks": np.stack(blocks, 1), "attention": np.stack(attention, 1), "final": final}
