"""Gradient methods: gradient x input at a block, conservative propagation, integrated gradients.

All three explain f_p(x) = beta(x) . u_p / |beta(x)| with |beta(x)| held (``base``): the
cotangent of one vector-Jacobian product is the partner's unit embedding over |beta(x)|,
so one forward pass of x (``jax.vjp``) serves every partner.
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
from pairviz_jax.models.probe import Probe

Array = jax.Array

# Partners per batched backward pass (memory: this many backward passes at once).
CHUNK = 8


def _check_layer(model, layer: int) -> None:
    depth = getattr(model, "depth", None)
    if not isinstance(layer, int) or depth is None or not 0 <= layer <= depth:
        raise ValueError(
            f"layer={layer!r} must be a block index in [0, {depth}] (the tokens entering that "
            "block; the depth means the last block's output)"
        )


def _token_gradient_x_input(
    model, variables, images, *, layer: int, detach: bool, chunk: int
) -> Prepared:
    """gradient x input on the tokens entering block ``layer``, per partner."""
    _check_layer(model, layer)
    n_all, d = token_count(model, variables, images)
    zeros = jnp.zeros((images.shape[0], n_all, d), jnp.float32)
    grid = model.grid(images.shape)

    def embed(delta):
        probe = Probe(detach=detach, block_deltas={layer: delta})
        emb, out = model.apply(variables, images, probe=probe)
        return emb.astype(jnp.float32), out["block_inputs"][layer].astype(jnp.float32)

    emb, vjp_fn, tokens = jax.vjp(embed, zeros, has_aux=True)

    def one(c):  # [B, E] -> relevance of every token [B, N']
        (g,) = vjp_fn(c)
        return (g * tokens).sum(-1)

    def pullback(cot):
        r = over_cotangents(one, cot, chunk)  # [B, K, N']
        return patch_rows(r, grid), r.sum(-1)

    return Prepared(emb, pullback)


def gradxinput(model, variables, images, *, layer=0, chunk=CHUNK) -> Prepared:
    """Gradient x input on the tokens x_k entering block k (k = ``layer``).

    ``R_j = x_kj . d f_p / d x_kj`` for every token j, by one VJP per partner through the
    blocks k..L-1 (``Probe.block_deltas``: the blocks below k are not differentiated). The map
    is R on the patch tokens; class and register tokens' relevance is in the total only.

    Conserves: nothing in general (first-order Taylor term; exact only where the network
    above block k is linear in x_k). The map's sum against the cosine is measured
    (``benchmarks/methods.py``). At k = L with a final LayerNorm the map is ~0 (the
    norm is scale-invariant per token): use k < L.
    """
    return _token_gradient_x_input(model, variables, images, layer=layer, detach=False, chunk=chunk)


def conservative(model, variables, images, *, layer=0, chunk=CHUNK) -> Prepared:
    """Conservative propagation (Ali et al., ICML 2022): gradient x input of the detached model.

    The model runs with ``Probe(detach=True)``: same forward values, but attention weights,
    LayerNorm 1/sigma and activation gates are constants for the gradient, so the network
    above block k is linear in (x_k, biases) jointly and gradient x input is its exact
    split (Euler): ``sum_j R_j + sum_b b . df/db = f_p(x) = score``.

    Conserves: the relevance over all tokens (patches, class/register tokens) sums to the
    cosine minus the bias terms (tested exactly with the bias terms from ``jax.grad``
    over the parameters); the map is its patch-token part.
    """
    return _token_gradient_x_input(model, variables, images, layer=layer, detach=True, chunk=chunk)


def _per_patch(pixels: Array, grid: tuple[int, int]) -> Array:
    """Sums pixel attributions [..., H, W] over each token's patch -> [..., gh, gw]."""
    h, w = pixels.shape[-2:]
    gh, gw = grid
    if h % gh or w % gw:
        raise ValueError(
            f"method 'ig' needs images of whole patches: {h}x{w} over a {gh}x{gw} grid"
        )
    x = pixels.reshape(*pixels.shape[:-2], gh, h // gh, gw, w // gw)
    return x.sum((-3, -1))


def ig(model, variables, images, *, steps=16, chunk=CHUNK) -> Prepared:
    """Integrated gradients (Sundararajan et al. 2017) over pixels, summed per patch.

    The path runs from the baseline x' = 0 (the normalised image's zero: the dataset's mean
    colour, a flat image) to x, with ``steps`` midpoint-rule points
    ``alpha_i = (i + 1/2) / steps``; |beta(x)| of the end point is held on the whole path.
    Per pixel, ``(x - x') * mean_i grad f_p(x' + alpha_i (x - x'))``, summed over the
    channels and each token's patch (so with a ViT, exactly IG over its patch tokens).
    Cost: ``steps`` forwards and ``steps`` backward passes per partner.

    Conserves (completeness): the map sums to ``f_p(x) - f_p(x')`` = the cosine minus
    ``beta(x') . u_p / |beta(x)|``, up to the quadrature error O(steps^-2) (tested).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    images = images.astype(jnp.float32)
    base = jnp.zeros_like(images)
    grid = model.grid(images.shape)

    def embed(x):
        return model.apply(variables, x)[0].astype(jnp.float32)

    emb = embed(images)
    alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps

    def pullback(cot):
        def step(acc, a):
            _, vjp_fn = jax.vjp(embed, base + a * (images - base))
            g = over_cotangents(lambda c: vjp_fn(c)[0], cot, chunk)  # [B, K, H, W, C]
            return acc + g, None

        zeros = jnp.zeros((images.shape[0], cot.shape[1], *images.shape[1:]), jnp.float32)
        acc, _ = jax.lax.scan(step, zeros, alphas)
        pixels = (acc / steps * (images - base)[:, None]).sum(-1)  # [B, K, H, W]
        m = _per_patch(pixels, grid)
        return m, m.sum((-2, -1))

    return Prepared(emb, pullback)


GRADXINPUT = register(
    Method(
        "gradxinput",
        gradxinput,
        "nothing in general (first-order Taylor term at block k)",
        dict(layer=0, chunk=CHUNK),
    )
)
CONSERVATIVE = register(
    Method(
        "conservative",
        conservative,
        "all tokens' relevance + bias terms = the cosine (exact)",
        dict(layer=0, chunk=CHUNK),
    )
)
IG = register(
    Method(
        "ig",
        ig,
        "completeness: sum = cosine - f(baseline), up to O(steps^-2)",
        dict(steps=16, chunk=CHUNK),
        needs_attention=False,
    )
)
