"""The faithfulness measures, as small functions of maps, masks and embeddings.

* Deletion and insertion (after Petsiuk et al. 2018, RISE, with the pair's cosine as the
  output): the explained image's patches are ranked by its map (highest first); step s of
  S replaces the top ``round(s N / S)`` patches by a baseline image (deletion) or reveals
  them on the baseline (insertion), and the cosine with the partner is recorded. A map
  that finds what makes the image similar to its partner makes the deletion curve fall
  fast (low area under the curve) and the insertion curve rise fast (high AUC). Baselines:
  ``"mean"`` (zeros of the normalised image, the dataset's mean colour) or ``"blur"`` (a
  Gaussian of sigma = one patch side). AUC: trapezoid rule over the fraction of patches.
* Energy in mask and pointing game: the map upsampled as displayed
  (``explain.upsample``), min-max normalised to [0, 1]; the share of its mass inside the
  object's mask (Wang et al. 2020, Score-CAM), and whether its maximum falls inside.
* Shared share: mass on the shared object over mass on the shared object and the
  distractor (0.5: cannot tell them apart).
* Pair sensitivity (one image, two partners, one per object in it): ``share_swing``, the
  shared share of object 0 with partner 0 minus that with partner 1 (0 for a map that
  ignores the partner, 1 for one that moves all its mass to the matching object), and
  ``map_correlation``, the Pearson correlation of the two token maps (1 for a map that
  ignores the partner).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax._util import unit_np

# --------------------------------------------------------------------------- ranking, masks


def patch_order(maps: np.ndarray) -> np.ndarray:
    """Token indices of each map, highest value first (ties: lower index first).

    Args:
      maps: [B, gh, gw] (or [B, N]).

    Returns:
      int [B, N].
    """
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def step_masks(order: np.ndarray, steps: int) -> np.ndarray:
    """Which tokens are changed at each step: the top ``round(s N / steps)`` of the order.

    Args:
      order: [B, N] token indices, most important first.
      steps: S.

    Returns:
      bool [B, S + 1, N]; step 0 changes nothing, step S every token.
    """
    b, n = order.shape
    counts = np.round(np.arange(steps + 1) * n / steps).astype(int)  # [S + 1]
    rank = np.empty_like(order)
    rank[np.arange(b)[:, None], order] = np.arange(n)[None, :]  # rank of each token
    return rank[:, None, :] < counts[None, :, None]


def to_pixels(token_mask: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Token masks [..., N] to pixel masks [..., H, W] (each token covers its patch)."""
    gh, gw = grid
    h, w = size
    if h % gh or w % gw:
        raise ValueError(f"image {h}x{w} is not a whole number of {gh}x{gw} patches")
    m = token_mask.reshape(*token_mask.shape[:-1], gh, gw)
    return np.repeat(np.repeat(m, h // gh, axis=-2), w // gw, axis=-1)


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [B, H, W, C] images (edge padding), float32."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    x = np.asarray(images, np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return x.astype(np.float32)


def baseline_images(images: np.ndarray, kind: str, patch: int) -> np.ndarray:
    """The image that deleted patches become: ``"mean"`` (zeros) or ``"blur"``."""
    if kind == "mean":
        return np.zeros_like(np.asarray(images, np.float32))
    if kind == "blur":
        return gaussian_blur(images, float(patch))
    raise ValueError(f"baseline must be 'mean' or 'blur', got {kind!r}")


def auc(curves: np.ndarray) -> np.ndarray:
    """Area under curves sampled at S + 1 equally spaced fractions of [0, 1], [..., S + 1]."""
    c = np.asarray(curves, np.float64)
    s = c.shape[-1] - 1
    return (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * s)


# --------------------------------------------------------------------------- mask measures


def normalised_pixels(maps: np.ndarray, size) -> np.ndarray:
    """Token maps [B, gh, gw] upsampled to ``size`` as displayed, min-max normalised to [0, 1]
    (a flat map becomes all ones)."""
    up = np.asarray(explain.upsample(jnp.asarray(maps, jnp.float32), tuple(size)), np.float64)
    lo = up.min((1, 2), keepdims=True)
    hi = up.max((1, 2), keepdims=True)
    flat = (hi - lo) <= 1e-12
    return np.where(flat, 1.0, (up - lo) / np.where(flat, 1.0, hi - lo))


def share_on(up: np.ndarray, shared: np.ndarray, distractor: np.ndarray) -> np.ndarray:
    """Mass of normalised pixel maps [B, H, W] on ``shared`` over mass on both masks (0.5 if
    none)."""
    on_shared = (up * shared).sum((1, 2))
    on_both = on_shared + (up * distractor).sum((1, 2))
    return np.where(on_both > 1e-12, on_shared / np.maximum(on_both, 1e-12), 0.5)


def energy_on(up: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of normalised pixel maps' mass inside the masks, [B]."""
    return (up * masks).sum((1, 2)) / np.maximum(up.sum((1, 2)), 1e-12)


def points_on(up: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each pixel map's maximum falls inside its mask, bool [B]."""
    flat = up.reshape(len(up), -1).argmax(1)
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), flat]


def shared_share(maps: np.ndarray, shared: np.ndarray, distractor: np.ndarray) -> np.ndarray:
    """Mass of each min-max-normalised map on the shared mask over its mass on both masks.

    Args:
      maps: [B, gh, gw] token-grid maps; upsampled to the masks' size.
      shared, distractor: bool [B, H, W] disjoint masks.

    Returns:
      [B] in [0, 1]; 0.5 where the map has no mass on either.
    """
    return share_on(normalised_pixels(maps, shared.shape[1:]), shared, distractor)


def energy_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of a min-max-normalised map's mass inside the mask.

    Args:
      maps: [B, gh, gw] token-grid maps; upsampled to the masks' size.
      masks: bool [B, H, W].

    Returns:
      [B] in [0, 1] (a constant map gives the mask's share of the image).
    """
    return energy_on(normalised_pixels(maps, masks.shape[1:]), masks)


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each upsampled map's maximum falls inside its mask, bool [B]."""
    return points_on(normalised_pixels(maps, masks.shape[1:]), masks)


def share_swing(
    maps_0: np.ndarray, maps_1: np.ndarray, mask_0: np.ndarray, mask_1: np.ndarray
) -> np.ndarray:
    """Pair sensitivity: the shared share of object 0 with partner 0 minus that with partner 1.

    Args:
      maps_0, maps_1: [B, gh, gw] one image's maps against partner 0 (who shares object 0)
        and partner 1 (who shares object 1).
      mask_0, mask_1: bool [B, H, W] the two objects in the image.

    Returns:
      [B] in [-1, 1]: 0 when the map ignores the partner, 1 when each partner puts all the
      mass on its own object.
    """
    size = mask_0.shape[1:]
    s0 = share_on(normalised_pixels(maps_0, size), mask_0, mask_1)
    s1 = share_on(normalised_pixels(maps_1, size), mask_0, mask_1)
    return s0 - s1


def map_correlation(maps_0: np.ndarray, maps_1: np.ndarray) -> np.ndarray:
    """Pearson correlation of two token maps per image, [B] (1 where both are flat and equal,
    0 where only one is flat)."""
    a = np.asarray(maps_0, np.float64).reshape(len(maps_0), -1)
    b = np.asarray(maps_1, np.float64).reshape(len(maps_1), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    flat = (na <= 1e-12) | (nb <= 1e-12)
    both_flat = (na <= 1e-12) & (nb <= 1e-12)
    r = (a * b).sum(1) / np.where(flat, 1.0, na * nb)
    return np.where(flat, np.where(both_flat, 1.0, 0.0), r)


# --------------------------------------------------------------------------- curves


def embed_in_batches(
    embed: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int, *, pad: bool = False
) -> np.ndarray:
    """Unit embeddings [n, E] of images [n, ...] in batches of exactly ``batch_size`` (the last
    one padded when ``n > batch_size`` or ``pad``, so a compiled ``embed`` is not compiled
    again)."""
    n = len(x)
    return embed_batches(embed, lambda s, e: x[s:e], n, batch_size, pad=pad or n > batch_size)


def embed_batches(
    embed: Callable[[np.ndarray], np.ndarray],
    make: Callable[[int, int], np.ndarray],
    n: int,
    batch_size: int,
    *,
    pad: bool = True,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Unit embeddings [n, E] of n images built batch by batch (``make(s, e)`` gives images
    s..e-1), each batch padded to exactly ``batch_size`` (its last image repeated) when
    ``pad``: one compiled shape of ``embed`` for every batch. ``progress(done)`` after each."""
    out = []
    for s in range(0, n, batch_size):
        chunk = np.asarray(make(s, min(s + batch_size, n)))
        k = len(chunk)
        if pad and k < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - k, axis=0)])
        out.append(np.asarray(embed(chunk))[:k])
        if progress:
            progress(s + k)
    return unit_np(np.concatenate(out))


MODES = ("deletion", "insertion")


def curve_images(maps: dict[str, np.ndarray], steps: int, modes=MODES):
    """The distinct images behind the inner points of every deletion/insertion curve.

    Each inner point s (1 <= s < S) of a curve is the explained image with some tokens shown
    as the baseline: the top ``round(s N / S)`` of the map's order (deletion) or all but
    them (insertion). Kinds whose maps rank the same top tokens, and any other coincidence,
    give the same image: it is listed once.

    Args:
      maps: {kind: [C, gh, gw]} maps of C explained images.
      steps: S.
      modes: ``"deletion"`` and/or ``"insertion"``.

    Returns:
      ``(pairs, shown, where)``: ``pairs`` int [U] which explained image each distinct image
      changes, ``shown`` bool [U, N] its tokens shown as the baseline, and ``where``
      {(kind, mode): int [C, S - 1]} the distinct image of each inner point.
    """
    seen: dict[tuple[int, bytes], int] = {}
    pairs: list[int] = []
    shown: list[np.ndarray] = []
    where = {}
    for kind, m in maps.items():
        changed = step_masks(patch_order(m), steps)[:, 1:-1]  # [C, S - 1, N]
        for mode in modes:
            base_tokens = changed if mode == "deletion" else ~changed
            idx = np.empty(base_tokens.shape[:2], int)
            for i, per_pair in enumerate(base_tokens):
                for s, t in enumerate(per_pair):
                    key = (i, np.packbits(t).tobytes())
                    if key not in seen:
                        seen[key] = len(pairs)
                        pairs.append(i)
                        shown.append(t)
                    idx[i, s] = seen[key]
            where[(kind, mode)] = idx
    n = next(iter(maps.values())).shape[1:]
    shown_arr = np.stack(shown) if shown else np.zeros((0, int(np.prod(n))), bool)
    return np.asarray(pairs, int), shown_arr, where


def curves_of_maps(
    embed: Callable[[np.ndarray], np.ndarray],
    images_a: np.ndarray,
    unit_b: np.ndarray,
    maps: dict[str, np.ndarray],
    grid: tuple[int, int],
    *,
    steps: int = 16,
    baseline: np.ndarray | None = None,
    batch_size: int = 256,
    ends: tuple[np.ndarray, np.ndarray] | None = None,
    modes: tuple[str, ...] = MODES,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Deletion and insertion curves of the cosine with B for several kinds of maps at once.

    Every inner point of every curve is one forward pass of a changed image A; the distinct
    images of all kinds and modes (``curve_images``) go through ``embed`` together, in batches
    of exactly ``batch_size`` (one compiled shape), each distinct image once.

    Args:
      embed: normalised images [n, H, W, C] -> embeddings [n, E] (any norm).
      images_a: [B, H, W, C] normalised images A (the explained images).
      unit_b: [B, E] unit embeddings of the partners B.
      maps: {kind: [B, gh, gw]} maps of A ranking its patches.
      grid: (gh, gw) token grid of A.
      steps: S; each curve has S + 1 points.
      baseline: [B, H, W, C] baseline images (default zeros: the mean colour).
      batch_size: images per forward.
      ends: the unit embeddings [B, E] of ``images_a`` and of ``baseline``, when known (the
        curves' end points, the same for every map); else embedded here.
      modes: ``"deletion"`` (replace the top patches by the baseline) and/or ``"insertion"``
        (start from the baseline, reveal the top patches).
      progress: called as ``progress(done, total)`` forwards after each batch.

    Returns:
      {kind: {mode: [B, S + 1] cosines}}; point s after changing ``round(s N / S)`` patches.
    """
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    images_a = np.asarray(images_a, np.float32)
    base = np.zeros_like(images_a) if baseline is None else np.asarray(baseline, np.float32)
    b, h, w, _ = images_a.shape
    if ends is None:
        both = embed_in_batches(embed, np.concatenate([images_a, base]), batch_size)
        ends = (both[:b], both[b:])
    full, empty = ((unit_b * e).sum(-1) for e in ends)  # cosine of the image, of the baseline
    pairs, shown, where = curve_images(maps, steps, modes)

    def make(s, e):
        pix = to_pixels(shown[s:e], grid, (h, w))[..., None]  # [n, H, W, 1]
        return np.where(pix, base[pairs[s:e]], images_a[pairs[s:e]])

    cos = np.zeros(0)
    if len(pairs):
        tick = progress and (lambda done: progress(done, len(pairs)))
        emb = embed_batches(embed, make, len(pairs), batch_size, progress=tick)
        cos = (emb * unit_b[pairs]).sum(-1)  # [U]
    out: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in maps}
    for (kind, mode), idx in where.items():
        first, last = (full, empty) if mode == "deletion" else (empty, full)
        out[kind][mode] = np.concatenate([first[:, None], cos[idx], last[:, None]], axis=1)
    return out


def score_curves(
    embed: Callable[[np.ndarray], np.ndarray],
    images_a: np.ndarray,
    unit_b: np.ndarray,
    maps: np.ndarray,
    grid: tuple[int, int],
    *,
    mode: str = "deletion",
    steps: int = 16,
    baseline: np.ndarray | None = None,
    batch_size: int = 256,
    ends: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Deletion or insertion curves of the cosine with B, for one kind of map
    (``curves_of_maps``, whose arguments these are).

    Args:
      maps: [B, gh, gw] maps of A ranking its patches.
      mode: ``"deletion"`` or ``"insertion"``.

    Returns:
      [B, S + 1] cosines; point s after changing ``round(s N / S)`` patches.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    got = curves_of_maps(
        embed,
        images_a,
        unit_b,
        {"map": maps},
        grid,
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        ends=ends,
        modes=(mode,),
    )
    return got["map"][mode]
