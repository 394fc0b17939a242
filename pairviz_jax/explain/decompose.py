"""The embedding split exactly over tokens, for every pooling of the ViT.

The paper's eq. 3-4 split the cosine over output tokens because a mean pool
(eq. 1) is linear in them. This module gives every pooling such a split:
``parts`` maps a *level* k (the input of block k; k = L is the last block's
output) to per-token vectors ``v [B, N', E]`` with

    embedding = sum over parts and tokens of v + rest,                   (*)

exactly, for the forward pass as computed. The cosine with a partner's unit
embedding u then splits as ``gamma_j = v_j . u / |beta|`` plus ``rest . u /
|beta|`` (the part no token is credited with), and each part is mapped back to
the input patches by the rollout of the blocks below its level.

* ``gap`` (the paper): level L, ``v_j = alpha_j / N`` on the patch tokens
  (eq. 4), ``rest = 0``. Unchanged.
* ``tok`` (class token; DeiT: mean of class and distillation tokens): level
  L - 1, the last block's input tokens. The pooled token's output is a function
  of them through one attention row, the MLP, the final LayerNorm and the
  projection. With the attention weights, LayerNorm scalings (1/sigma) and
  activation gates held at their actual values, that function is linear in
  the input tokens plus bias terms, and ``v_j`` is its linear part applied to
  token j (gradient x input of the detached block, Ali et al. 2022): the
  message of token j through the attention, plus, for the pooled token itself,
  its residual path. ``rest`` = the bias terms.
* ``map`` (SigLIP's attention pooling): level L, the encoder's output tokens
  (before ``encoder_norm``), through the pooling attention, its MLP and the
  projection, linearised the same way.
* ``gap_tok`` (DINOv2's ``[class token, mean of patches]``): the ``tok`` part
  in the first D entries, the ``gap`` part in the last D.

Nothing here is an approximation: the gates and scalings are those of this
forward pass, so (*) holds to float rounding (tested), and ``v`` equals the
JVP of the detached model along each token (tested). What the rollout then
does with a part is the paper's approximation (eq. 5-6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from pairviz_jax.models.layers import gate

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST


def _centre(x: Array) -> Array:
    return x - x.mean(-1, keepdims=True)


def _inv_sigma(x: Array, eps: float) -> Array:
    c = _centre(x)
    return jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + eps)


def _layer_norm(x: Array, p: Mapping[str, Array], eps: float) -> Array:
    return _centre(x) * _inv_sigma(x, eps) * p["scale"] + p["bias"]


def _ln_linear(c: Array, inv: Array, p: Mapping[str, Array]) -> Array:
    """The LayerNorm's linear part with 1/sigma fixed: ``scale * (c - mean(c)) / sigma``."""
    return _centre(c) * inv * p["scale"]


def _dense(x: Array, p: Mapping[str, Array], bias: bool = True) -> Array:
    y = jnp.einsum("...d,de->...e", x, p["kernel"], precision=_HI)
    return y + p["bias"] if bias and "bias" in p else y


def _heads(x: Array, p: Mapping[str, Array], bias: bool = True) -> Array:
    """[..., D] -> [..., H, Dh] with a ``DenseGeneral`` kernel [D, H, Dh]."""
    y = jnp.einsum("...d,dhk->...hk", x, p["kernel"], precision=_HI)
    return y + p["bias"] if bias else y


def _attend_rows(q_in: Array, kv: Array, p: Mapping[str, Array]) -> Array:
    """Softmax weights of queries ``q_in`` [B, R, D] over ``kv`` [B, N, D]: [B, R, H, N]."""
    q = _heads(q_in, p["query"])
    k = _heads(kv, p["key"])
    logits = jnp.einsum("brhk,bnhk->brhn", q, k, precision=_HI) / jnp.sqrt(q.shape[-1])
    return jax.nn.softmax(logits, axis=-1)


def _messages(weights: Array, values: Array, p_out: Mapping[str, Array]) -> Array:
    """Per-source messages of attention rows: [B, R, H, N] x [B, N, H, Dh] -> [B, R, N, D]."""
    return jnp.einsum("brhn,bnhk,hkd->brnd", weights, values, p_out["kernel"], precision=_HI)


def _attention_out(weights: Array, values: Array, p_out: Mapping[str, Array]) -> Array:
    """The attention output of the rows: [B, R, D] (with every bias)."""
    y = jnp.einsum("brhn,bnhk,hkd->brd", weights, values, p_out["kernel"], precision=_HI)
    return y + p_out["bias"]


def _mlp(x: Array, p: Mapping[str, Array], act: str) -> tuple[Array, Array]:
    """The MLP at tokens x [..., D]: (output [..., D], gate [..., M])."""
    z = _dense(x, p["Dense_0"])
    if act == "swiglu":
        z1, z2 = jnp.split(z, 2, axis=-1)
        g = jax.nn.silu(z1)
        return _dense(g * z2, p["Dense_1"]), g
    g = gate(z, act)
    return _dense(z * g, p["Dense_1"]), g


def _mlp_linear(c: Array, g: Array, p: Mapping[str, Array], act: str) -> Array:
    """The MLP's linear part at fixed gates ``g`` [B, R, M] on contributions c [B, R, T, D]."""
    z = jnp.einsum("brtd,dm->brtm", c, p["Dense_0"]["kernel"], precision=_HI)
    if act == "swiglu":
        z = jnp.split(z, 2, axis=-1)[1]
    return jnp.einsum("brtm,md->brtd", z * g[:, :, None], p["Dense_1"]["kernel"], precision=_HI)


def _residual_mlp(
    c: Array, h: Array, p_ln: Mapping[str, Array], p_mlp: Mapping[str, Array], model, ls2=None
) -> tuple[Array, Array]:
    """``h + ls2 * MLP(LN(h))`` at rows h [B, R, D] and its linear part on c [B, R, T, D]."""
    eps, act = model.layer_norm_eps, model.mlp_act
    inv = _inv_sigma(h, eps)  # [B, R, 1]
    m, g = _mlp(_layer_norm(h, p_ln, eps), p_mlp, act)
    dm = _mlp_linear(_ln_linear(c, inv[:, :, None], p_ln), g, p_mlp, act)
    if ls2 is not None:
        m, dm = m * ls2, dm * ls2
    return h + m, c + dm


def _project(c: Array, out_rows: Array, params: Mapping[str, Any], model, final_norm: bool):
    """Final LayerNorm (linear part at the rows' 1/sigma) and projection on c [B, R, T, D]."""
    if final_norm:
        p_norm = params["Transformer"]["encoder_norm"]
        c = _ln_linear(c, _inv_sigma(out_rows, model.layer_norm_eps)[:, :, None], p_norm)
    if model.proj_dim:
        c = jnp.einsum("brtd,de->brte", c, params["head"]["kernel"], precision=_HI)
    return c


def _tok_part(model, params: Mapping[str, Any], x: Array) -> Array:
    """Contributions of the last block's input tokens x [B, N', D] to the pooled class token(s)."""
    rows = model.num_class_tokens
    eps = model.layer_norm_eps
    blk = params["Transformer"][f"encoderblock_{model.depth - 1}"]
    att = blk["MultiHeadDotProductAttention_1"]
    ls1 = blk.get("ls1")
    ls2 = blk.get("ls2")
    inv0 = _inv_sigma(x, eps)
    y0 = _layer_norm(x, blk["LayerNorm_0"], eps)
    weights = _attend_rows(y0[:, :rows], y0, att)  # [B, R, H, N']
    # Messages of the value path's linear part (biases go to `rest`).
    v_lin = _heads(_ln_linear(x, inv0, blk["LayerNorm_0"]), att["value"], bias=False)
    c = _messages(weights, v_lin, att["out"])  # [B, R, N', D]
    h = _attention_out(weights, _heads(y0, att["value"]), att["out"])  # [B, R, D]
    if ls1 is not None:
        c, h = c * ls1, h * ls1
    h = x[:, :rows] + h
    # The pooled token's own residual path: gradient x input of the identity.
    eye = jnp.eye(rows, x.shape[1], dtype=x.dtype)  # row r -> token r
    c = c + eye[None, :, :, None] * x[:, None, :, :]
    out_rows, c = _residual_mlp(c, h, blk["LayerNorm_2"], blk["MlpBlock_3"], model, ls2)
    c = _project(c, out_rows, params, model, final_norm=True)
    return c.mean(axis=1)  # DeiT: the mean of the class and distillation tokens


def _map_part(model, params: Mapping[str, Any], x: Array) -> Array:
    """Contributions of the output tokens x [B, N', D] (before the norm) to MAP pooling."""
    eps = model.layer_norm_eps
    p_norm = params["Transformer"]["encoder_norm"]
    head = params["MAPHead_0"]
    att = head["MultiHeadDotProductAttention_0"]
    y = _layer_norm(x, p_norm, eps)
    probe = jnp.broadcast_to(head["probe"], (x.shape[0], 1, x.shape[-1]))
    weights = _attend_rows(probe, y, att)  # [B, 1, H, N']
    v_lin = _heads(_ln_linear(x, _inv_sigma(x, eps), p_norm), att["value"], bias=False)
    c = _messages(weights, v_lin, att["out"])  # [B, 1, N', D]
    h = _attention_out(weights, _heads(y, att["value"]), att["out"])  # [B, 1, D]
    _, c = _residual_mlp(c, h, head["LayerNorm_0"], head["MlpBlock_0"], model)
    return _project(c, h, params, model, final_norm=False)[:, 0]


def decompose_embedding(
    model, params: Mapping[str, Any], out: Mapping[str, Any]
) -> tuple[dict[int, Array], Array]:
    """Splits ``out["embedding"]`` over tokens at one or two levels (see the module doc).

    Args:
      model: the ``ViT``.
      params: its parameters (``variables["params"]``).
      out: the forward's outputs (``ViT.__call__``): ``tokens``, ``embedding`` and
        ``block_inputs`` (of which the last block's input tokens [B, N', D] and its
        output before ``encoder_norm`` [B, N', D] are read).

    Returns:
      ``(parts, rest)``: ``{level: v [B, N', E]}`` (level L - 1 for the class
      token, L for the output tokens) and ``rest`` [B, E], with
      ``sum(v.sum(1) for v in parts.values()) + rest == embedding``.
    """
    emb = out["embedding"]
    depth, p, b = model.depth, model.num_prefix_tokens, emb.shape[0]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    last_input = out["block_inputs"][-2].astype(jnp.float32)
    prenorm = out["block_inputs"][-1].astype(jnp.float32)
    tokens = out["tokens"].astype(jnp.float32)
    n = tokens.shape[1]

    def gap_values() -> Array:
        zeros = jnp.zeros((b, p, tokens.shape[-1]), jnp.float32)
        return jnp.concatenate([zeros, tokens / n], axis=1)  # eq. 4 without the partner

    pool = model.pool_type
    if pool == "gap":
        parts = {depth: gap_values()}
    elif pool == "tok":
        parts = {depth - 1: _tok_part(model, params, last_input)}
    elif pool == "map":
        parts = {depth: _map_part(model, params, prenorm)}
    elif pool == "gap_tok":
        tok = _tok_part(model, params, last_input)
        gap = gap_values()
        parts = {
            depth - 1: jnp.concatenate([tok, jnp.zeros_like(gap)], axis=-1),
            depth: jnp.concatenate([jnp.zeros_like(tok), gap], axis=-1),
        }
    else:
        raise ValueError(f"no decomposition for pool_type={pool!r}")
    total = sum(v.sum(axis=1) for v in parts.values())
    return parts, emb.astype(jnp.float32) - total
