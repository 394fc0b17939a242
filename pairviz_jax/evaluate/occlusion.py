"""Occlusion: what the pair's cosine really depends on, measured on the model itself.

An image's patch windows are replaced, one window per forward pass, by the deletion baseline
(zeros: the mean colour once normalised, as ``measures.baseline_images("mean")``), and the
cosine with each partner is measured again. The occlusion map of image A against partner k is

    O_k[t] = mean over the windows w covering token t of  cos(A, u_k) - cos(A with w deleted, u_k)

(positive: the token supports the similarity): occlusion sensitivity (Zeiler & Fergus,
"Visualizing and Understanding Convolutional Networks", ECCV 2014) of the pair's cosine. It
explains nothing about the model's inner workings; it is the reference a map is checked
against. ``occluded_cosines`` is the general
form: any masks per image (``swap`` deletes whole pasted objects with it).

Cost: one forward per mask (M = ceil((g - window) / stride + 1)^2 windows on a g x g grid,
plus one unoccluded pass), compiled once per shape: masks are ``vmap``-ped into chunks of
``chunk`` images per forward and ``lax.map``-ped over chunks and images.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax.explain.similarity import unit

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST

__all__ = ["occluded_cosines", "occlusion_maps", "window_masks"]


def window_masks(
    grid: tuple[int, int], patch: tuple[int, int], window: int = 1, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Square windows of ``window`` x ``window`` tokens, every ``stride`` tokens (default:
    ``window``), the last row and column of windows flush with the grid's edge.

    Args:
      grid: (gh, gw) tokens.
      patch: (ph, pw) pixels per token.
      window, stride: in tokens.

    Returns:
      ``pixels`` bool [M, gh * ph, gw * pw] (True: deleted) and ``tokens`` bool [M, gh, gw].
    """
    stride = window if stride is None else stride
    gh, gw = grid
    if not 1 <= window <= min(gh, gw) or stride < 1:
        raise ValueError(f"window={window}, stride={stride}: expected 1 <= window <= {gh, gw}")

    def starts(g: int) -> list[int]:
        s = list(range(0, g - window + 1, stride))
        return s if s[-1] == g - window else [*s, g - window]

    tokens = []
    for i in starts(gh):
        for j in starts(gw):
            t = np.zeros((gh, gw), bool)
            t[i : i + window, j : j + window] = True
            tokens.append(t)
    tok = np.stack(tokens)
    pix = np.repeat(np.repeat(tok, patch[0], axis=1), patch[1], axis=2)
    return pix, tok


def _body(model, chunk, variables, images, base, masks, units):
    """images, base [B, H, W, C]; masks bool [B, M, H, W] (M a multiple of chunk); units
    [B, K, E] -> cosines [B, M, K]."""
    h, w = images.shape[1:3]
    m = masks.shape[1]

    def one_image(args):
        image, back, ms, u = args

        def one_chunk(mc):  # [chunk, H, W] -> [chunk, K]
            xs = jax.vmap(lambda k: jnp.where(k[..., None], back, image))(mc)
            emb = model.apply(variables, xs)[0]
            return jnp.einsum("ce,ke->ck", unit(emb), u, precision=_HI)

        out = jax.lax.map(one_chunk, ms.reshape(m // chunk, chunk, h, w))
        return out.reshape(m, -1)

    return jax.lax.map(one_image, (images, base, masks, unit(units)))


@functools.lru_cache(maxsize=16)
def _fn(model, chunk):
    return jax.jit(functools.partial(_body, model, chunk))


def occluded_cosines(
    model,
    variables,
    images: Array,
    units: Array,
    masks: np.ndarray,
    *,
    base: Array | None = None,
    chunk: int = 8,
) -> np.ndarray:
    """Cosines of each image, with each mask's pixels deleted, with each partner.

    Args:
      model, variables: the model (any pairviz_jax model: ``apply(...)[0]`` is the embedding).
      images: [B, H, W, C] normalised.
      units: [B, K, E] the partners' embeddings (any norm).
      masks: bool [M, H, W] (the same for every image) or [B, M, H, W]; True: deleted.
      base: [B, H, W, C] what deleted pixels become (default zeros: the mean colour).
      chunk: images per forward pass.

    Returns:
      [B, M, K] float32: cos(image with mask m deleted, partner k).
    """
    images = jnp.asarray(images, jnp.float32)
    b = images.shape[0]
    masks = np.asarray(masks, bool)
    if masks.ndim == 3:
        masks = np.broadcast_to(masks, (b, *masks.shape))
    if masks.ndim != 4 or masks.shape[0] != b or masks.shape[2:] != images.shape[1:3]:
        raise ValueError(
            f"masks must be [M, H, W] or [B, M, H, W] with (B, H, W) = "
            f"{(b, *images.shape[1:3])}, got {masks.shape}"
        )
    units = jnp.asarray(units, jnp.float32)
    if units.ndim != 3 or units.shape[0] != b:
        raise ValueError(f"units must be [B, K, E] with B = {b}, got {tuple(units.shape)}")
    m = masks.shape[1]
    chunk = max(1, min(chunk, m))
    pad = -m % chunk
    if pad:
        masks = np.concatenate([masks, np.zeros((b, pad, *masks.shape[2:]), bool)], axis=1)
    base = jnp.zeros_like(images) if base is None else jnp.asarray(base, jnp.float32)
    out = _fn(model, chunk)(variables, images, base, jnp.asarray(masks), units)
    return np.asarray(out)[:, :m]


def occlusion_maps(
    model,
    variables,
    images: Array,
    units: Array,
    *,
    window: int = 1,
    stride: int | None = None,
    base: Array | None = None,
    chunk: int = 8,
) -> dict[str, np.ndarray]:
    """The occlusion map of each image against each partner (module docstring).

    Args:
      model, variables: the model.
      images: [B, H, W, C] normalised.
      units: [B, K, E] the partners' embeddings.
      window, stride: the deleted windows, in tokens (``window_masks``).
      base: what deleted pixels become (default zeros).
      chunk: images per forward pass.

    Returns:
      ``maps`` [B, K, gh, gw] (the mean cosine drop of the windows covering each token),
      ``score`` [B, K] (the unoccluded cosine), ``drops`` [B, M, K] (one per window) and
      ``windows`` bool [M, gh, gw].
    """
    images = jnp.asarray(images, jnp.float32)
    grid = tuple(model.grid(images.shape))
    patch = (images.shape[1] // grid[0], images.shape[2] // grid[1])
    if (grid[0] * patch[0], grid[1] * patch[1]) != tuple(images.shape[1:3]):
        raise ValueError(f"occlusion: image size {images.shape[1:3]} is not a grid of patches")
    pix, tok = window_masks(grid, patch, window, stride)
    none = np.zeros((1, *pix.shape[1:]), bool)
    cos = occluded_cosines(
        model, variables, images, units, np.concatenate([none, pix]), base=base, chunk=chunk
    )
    score, drops = cos[:, 0], cos[:, :1] - cos[:, 1:]  # [B, K], [B, M, K]
    cover = tok.reshape(len(tok), -1).astype(np.float64)  # [M, N]
    summed = np.einsum("bmk,mn->bkn", drops.astype(np.float64), cover)
    maps = summed / cover.sum(0)
    return {
        "maps": maps.reshape(*maps.shape[:2], *grid).astype(np.float32),
        "score": score,
        "drops": drops,
        "windows": tok,
    }
