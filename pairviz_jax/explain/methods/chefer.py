"""Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021) with the pair's cosine as target.

Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers" (ICCV 2021; the issue cites it as CVPR 2021, which is their
earlier LRP-based paper). For self-attention the relevance of tokens to tokens starts
as ``R = I`` [N', N'] and every block l, first to last, updates it with its head-averaged,
positively clipped gradient-weighted attention:

    A_bar_l = mean_h (grad_A_l * A_l)^+,        R <- R + A_bar_l R,

where grad_A_l is the gradient of the explained quantity (here f_p, ``base``) with
respect to block l's softmax weights A_l [H, N', N']. The map is a weighted sum of R's
rows, w R, restricted to the patch columns; which rows ``w`` depends on the pooling:

* ``gap`` (the paper's model: the mean of the patch output tokens): the mean of the
  patch rows, w = 1/N on the patches (each output token enters the embedding equally);
* ``tok``: the class token's row (DeiT's class and distillation tokens: their mean);
* ``gap_tok``: half of each of the two above (the embedding concatenates both);
* ``map``: the pooling probe's row, ``w = mean_h (grad_A_pool * A_pool)^+`` [1, N'] from
  the MAP head's attention (the probe is a query outside the sequence, so it has no
  identity path).

The target is the cosine itself by default (``target="cosine"``: its gradient moves
|beta| too, ``methods.base.cotangent``), as Chefer et al. take the class score's own
gradient; ``target="score"`` holds |beta| like the other methods. On photo pairs held out
from every reported number (half a, seed 1, 24 distractor pairs, DINOv2-S/14) the cosine
target moved B's map to the partner's object twice as much (share swing .116 vs .055).

Computed as ``w (I + A_bar_{L-1}) ... (I + A_bar_0)`` (row vector times matrices, from the
top: L N'^2 work instead of L N'^3; the same numbers as the R update, tested).

Conserves: nothing (the rows of R are not normalised, the clipping drops negative
evidence); the map's sum against the cosine is measured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pairviz_jax.explain.methods.base import (
    Method,
    Prepared,
    over_cotangents,
    patch_rows,
    register,
    token_count,
)
from pairviz_jax.explain.methods.gradients import CHUNK
from pairviz_jax.models.probe import Probe

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST


def output_rows(model, n_all: int, n_patches: int) -> Array | None:
    """The weights w [N'] of R's rows that make the map (None for ``map``: from gradients)."""
    pool = getattr(model, "pool_type", "gap")
    c = model.num_class_tokens
    gap = jnp.zeros((n_all,), jnp.float32).at[n_all - n_patches :].set(1.0 / n_patches)
    tok = jnp.zeros((n_all,), jnp.float32).at[:c].set(1.0 / max(c, 1))
    if pool == "gap":
        return gap
    if pool == "tok":
        return tok
    if pool == "gap_tok":
        return 0.5 * (gap + tok)
    if pool == "map":
        return None
    raise ValueError(f"method 'chefer' has no output rows for pool_type={pool!r}")


def chefer(model, variables, images, *, chunk=CHUNK) -> Prepared:
    """Gradient-weighted attention rollout of f_p (module doc); one VJP per partner.

    Args:
      model: a ``ViT`` (any pooling).
      variables: its variables.
      images: [B, H, W, C] normalised.
      chunk: partners per batched backward pass.

    Returns:
      ``Prepared`` whose pullback gives maps [B, K, gh, gw] and the sum of ``w R`` over
      every token [B, K].

    Conserves: nothing; the rows of R are not normalised and negative evidence is clipped
    (the map's sum against the cosine is measured in ``benchmarks/methods.py``).
    """
    n_all, _ = token_count(model, variables, images)
    b, depth, heads = images.shape[0], model.depth, model.num_heads
    grid = model.grid(images.shape)
    pool = getattr(model, "pool_type", "gap")
    deltas = {i: jnp.zeros((b, heads, n_all, n_all), jnp.float32) for i in range(depth)}
    if pool == "map":  # the MAP head's attention (key depth, see ViT.__call__)
        deltas[depth] = jnp.zeros((b, heads, 1, n_all), jnp.float32)
    rows = output_rows(model, n_all, grid[0] * grid[1])

    def embed(deltas):
        emb, out = model.apply(variables, images, probe=Probe(attention_deltas=deltas))
        attn = {i: out["attention"][:, i] for i in range(depth)}  # [B, H, N', N'] each
        if pool == "map":
            attn[depth] = out["pool_attention"]  # [B, H, 1, N']
        return emb.astype(jnp.float32), attn

    emb, vjp_fn, attn = jax.vjp(embed, deltas, has_aux=True)

    def bar(g, a):  # mean_h (grad_A * A)^+ : [B, H, Q, N'] -> [B, Q, N']
        return jnp.maximum(g * a.astype(jnp.float32), 0.0).mean(axis=1)

    def one(c):  # [B, E] -> w R over every token [B, N']
        (g,) = vjp_fn(c)
        r = bar(g[depth], attn[depth])[:, 0] if rows is None else jnp.broadcast_to(rows, (b, n_all))
        for i in reversed(range(depth)):  # w (I + A_bar_{L-1}) ... (I + A_bar_0)
            r = r + jnp.einsum("bq,bqn->bn", r, bar(g[i], attn[i]), precision=_HI)
        return r

    def pullback(cot):
        r = over_cotangents(one, cot, chunk)  # [B, K, N']
        return patch_rows(r, grid), r.sum(-1)

    return Prepared(emb, pullback)


CHEFER = register(
    Method(
        "chefer",
        chefer,
        "nothing (unnormalised, clipped relevance); measured",
        dict(chunk=CHUNK, target="cosine"),
    )
)
