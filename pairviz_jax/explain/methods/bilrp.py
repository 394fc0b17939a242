"""Second-order explanations: the cosine split over patch pairs through the whole network.

BiLRP (Eberle et al., "Building and Interpreting Deep Similarity Models", TPAMI 2020)
splits a dot-product similarity over pairs of input features: with ``R^a[i, m]`` the
relevance of input i of image a for its embedding coordinate m,

    C[i, j] = sum_m R^a[i, m] R^b[j, m].

Its transformer form (Vasileiou & Eberle, "Explaining Text Similarity in Transformer
Models", NAACL 2024) takes R from the conservative rules for attention and LayerNorm
(Ali et al., ICML 2022): with the softmax weights, LayerNorm's 1/sigma and the activation
gates detached (``models.Probe(detach=True)``), the network above block k is linear in
(the tokens x_k entering block k, the biases) jointly, so gradient x input splits each
coordinate exactly (Euler), up to the biases' share. That is the ``conservative`` method,
one coordinate at a time.

**The fold.** The explained quantity of ``explain.methods.base`` is linear in the partner's
unit embedding, ``f = beta_a . u_b / |beta_a|`` (``|beta_a|`` held), so every method that pulls a
cotangent back folds: ``W_a[i, m]`` = the conservative relevance of patch i for
``beta_a[m] / |beta_a|``, E backward passes per image (the cotangents ``e_m / |beta_a|``,
``chunk`` at a time under ``jax.lax.map``). Then, per pair,

    C = W_a W_b^T,                       (second order: patch i of a with patch j of b)
    C.sum(-1) + rest_a = W_a u_b = the conservative map of a against b (eq. 6's place),
    C.sum() + rest_a.sum() + rest_b.sum() + rest = u_a . u_b = the cosine (eq. 2),

with ``r = u - sum_i W_i`` (``Folded.rest``) the share of a unit embedding no patch gets:
the biases above block k and the prefix (class, register) tokens. This is exactly
``explain.correspondence``'s algebra, so a bilrp ``Folded`` goes through it unchanged, and
a gallery costs one fold per image (``explain.cross_maps(method="bilrp")``).

**Low rank.** ``basis=U`` [E, k] (orthonormal columns, e.g. ``top_directions`` of a
gallery's unit embeddings) folds k backward passes instead of E: ``W U`` [N, k] and
``U^T u`` [k]. Pairs of such folds give C_k = W_a U U^T W_b^T, exact when U spans the
directions the two images' relevance uses (k = E: exact); its error against k is measured
in ``benchmarks/second_order.py``. The cosine it sums to is that of the projected unit
embeddings.

The block (``layer``): k = 0 splits over the patch embeddings (the whole network); k > 0
is the cheaper relative at an intermediate block (backward passes through L - k blocks),
the relevance of the block-k tokens (token i keeps its grid place, not its content alone).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax._util import unit_np
from pairviz_jax.explain.cross import Folded
from pairviz_jax.explain.maps import Inputs
from pairviz_jax.explain.methods.base import Method, register
from pairviz_jax.explain.methods.gradients import conservative
from pairviz_jax.explain.similarity import safe_norm

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST

# Backward passes per batched step of the fold (memory: this many at once).
CHUNK = 32
OPTIONS = dict(layer=0, chunk=CHUNK)


def _fold_body(model, layer, chunk, variables, images, basis):
    """W [B, N, K], u [B, K] (coordinates in ``basis`` [E, K]), rest, all-token total."""
    prep = conservative(model, variables, images, layer=layer, chunk=chunk)
    emb = prep.embedding.astype(jnp.float32)  # [B, E]
    norm = safe_norm(emb)  # [B]
    dirs = basis.T.astype(jnp.float32)  # [K, E]
    cot = dirs[None] / norm[:, None, None]  # [B, K, E]: coordinate k of beta / |beta|
    maps, total = prep.pullback(cot)  # [B, K, gh, gw], [B, K]
    b, k = maps.shape[:2]
    w = jnp.swapaxes(maps.reshape(b, k, -1), 1, 2)  # [B, N, K]
    u = jnp.einsum("be,ke->bk", emb / norm[:, None], dirs, precision=_HI)
    return w, u, u - w.sum(1), total


@functools.lru_cache(maxsize=32)
def _fold_fn(model, layer: int, chunk: int):
    return jax.jit(functools.partial(_fold_body, model, layer, chunk))


def _check(model, options) -> None:
    layer, chunk = options.get("layer", 0), options.get("chunk", CHUNK)
    depth = getattr(model, "depth", None) if model is not None else None
    if not isinstance(layer, int) or layer < 0 or (depth is not None and layer > depth):
        raise ValueError(f"layer={layer!r} must be a block index in [0, {depth}]")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer")


def _basis(basis, e: int) -> Array:
    if basis is None:
        return jnp.eye(e, dtype=jnp.float32)
    basis = jnp.asarray(basis, jnp.float32)
    if basis.ndim != 2 or basis.shape[0] != e or not 1 <= basis.shape[1] <= e:
        raise ValueError(f"basis must be [E, k] with E = {e} and 1 <= k <= E, got {basis.shape}")
    return basis


def fold_parts(x: Inputs, *, layer: int = 0, chunk: int = CHUNK, basis=None) -> dict:
    """The fold with its parts (for conservation checks).

    Returns:
      ``w`` [B, N, K], ``unit`` [B, K], ``rest`` [B, K] (``unit - w.sum(1)``: prefix tokens
      plus biases) and ``total`` [B, K] (the relevance over every token, prefix tokens
      included; ``unit - total`` is the biases' share, exactly). K = E, or k with a basis.
    """
    if not isinstance(x, Inputs):
        raise ValueError(f"bilrp folds explain.Inputs(model, variables, images), got {type(x)}")
    _check(x.model, dict(layer=layer, chunk=chunk))
    e = int(x.model.embedding_dim)
    w, u, rest, total = _fold_fn(x.model, layer, chunk)(x.variables, x.images, _basis(basis, e))
    return {"w": w, "unit": u, "rest": rest, "total": total}


def fold(x: Inputs | Folded, *, layer: int = 0, chunk: int = CHUNK, basis=None) -> Folded:
    """One image's second-order fold: W [B, N, E] and u [B, E] (module doc).

    Cost: one forward pass and E backward passes per image (K = k with ``basis``), ``chunk``
    at a time. The result goes to ``explain.correspondence`` (C, its marginals, the rest
    terms) and ``explain.cross_maps(method="bilrp")``.

    Args:
      x: ``explain.Inputs`` of B images (a ViT), or an already ``Folded`` (returned as is).
      layer: the block whose input tokens are split (0: the patch embeddings).
      chunk: backward passes per batched step.
      basis: None (exact, K = E), or U [E, k] with orthonormal columns (low rank).

    Returns:
      ``Folded`` with ``w`` [B, N, K], ``unit`` [B, K], ``rest`` [B, K] and ``grid``.
    """
    if isinstance(x, Folded):
        return x
    parts = fold_parts(x, layer=layer, chunk=chunk, basis=basis)
    grid = x.model.grid(x.images.shape)
    return Folded(w=parts["w"], unit=parts["unit"], grid=grid, rest=parts["rest"])


def top_directions(embeddings, k: int) -> np.ndarray:
    """U [E, k]: the top-k right singular vectors of the unit embeddings [G, E] (a gallery's).

    The directions along which the gallery's cosines vary most; ``fold(..., basis=U)``
    then costs k backward passes per image instead of E.
    """
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2 or not 1 <= k <= e.shape[1]:
        raise ValueError(f"embeddings must be [G, E] and 1 <= k <= E, got {e.shape}, k={k}")
    e = unit_np(e, axis=1)
    _, s, vt = np.linalg.svd(e, full_matrices=True)
    return np.ascontiguousarray(vt[:k].T.astype(np.float32))


def _fold_any(x, *, layer, chunk):
    return fold(x, layer=layer, chunk=chunk)


BILRP = register(
    Method(
        "bilrp",
        conservative,
        "C sums to the cosine minus the rest terms (bias, prefix tokens; exact); "
        "its marginals are conservative's maps",
        OPTIONS,
        check=_check,
        fold=_fold_any,
        per_image=(Folded,),
    )
)
