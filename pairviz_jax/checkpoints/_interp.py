"""Position-embedding resampling, exactly as each family's own code does it.

A ViT's learned position embedding is a grid ``[gh, gw, D]``; running the model
at another image size needs it resampled to the new token grid. The families
disagree on how, and the difference is visible in the tokens (DINOv2-S/14 at
224 px: up to 0.41 between two conventions), so each file records its family's
convention (``Checkpoint.interpolation``) and ``load`` uses it:

==================== ========================================================
``linear``           half-pixel bilinear, no antialiasing (timm's ``.npz``
                     reader; ``jax.image.resize``)
``zoom``             corner-aligned bilinear, ``scipy.ndimage.zoom(order=1)``
                     (big_vision, vit_jax, the authors)
``bicubic``          ``torch.nn.functional.interpolate(mode="bicubic",
                     align_corners=False, size=grid)``: Keys' cubic with
                     a = -0.75, borders clamped (Hugging Face Dinov2, CLIP,
                     SigLIP)
``bicubic_antialias`` the same call with ``antialias=True``: PIL's cubic
                     filter (a = -0.5) widened by the scale when shrinking,
                     weights renormalised at the borders (Hugging Face
                     Dinov2WithRegisters, DINOv2 hub models with registers,
                     timm, OpenCLIP)
``bicubic_offset``   the DINOv2 hub (no registers): ``scale_factor = (g +
                     0.1) / M`` instead of a size, which moves every sample
                     (``interpolate_offset``)
==================== ========================================================

``interpolate_bicubic`` reproduces torch's CPU kernels (``upsample_bicubic2d``
and ``_upsample_bicubic2d_aa``): the sample positions rounded to float32 as
torch rounds them, the weights and sums in float64 (within 1e-6 of torch's
float32 results for values of order 1). Nothing here imports torch; the tests
compare against values torch produced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

METHODS = ("linear", "zoom", "bicubic", "bicubic_antialias", "bicubic_offset")
# The DINOv2 hub's `interpolate_offset`.
HUB_OFFSET = 0.1

_F32 = np.float32


def _cubic_keys(t: np.ndarray, a: float) -> np.ndarray:
    """The four Keys cubic-convolution weights for fractional offsets t [n] -> [n, 4]."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _scale(in_size: int, out_size: int, scale_factor: float | None) -> np.float32:
    """torch's ``area_pixel_compute_scale`` (align_corners=False), in float32."""
    if scale_factor is not None and scale_factor > 0:
        return _F32(1.0 / scale_factor)
    return _F32(in_size) / _F32(out_size)


def _bicubic_matrix(in_size: int, out_size: int, scale_factor: float | None) -> np.ndarray:
    """[out, in] weights of torch's ``upsample_bicubic2d`` along one axis (no antialias)."""
    scale = float(_scale(in_size, out_size, scale_factor))
    # scale * (i + 0.5) - 0.5 rounded once to float32 (torch's kernel fuses the
    # multiply-add); may be negative: cubic does not clamp it.
    real = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(_F32)
    idx = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    t = np.clip(real.astype(np.float64) - idx, 0.0, 1.0)
    coeffs = _cubic_keys(t, -0.75)
    w = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    for j in range(4):
        # Border: the index is clamped, so the edge sample takes the outside weights.
        np.add.at(w, (rows, np.clip(idx - 1 + j, 0, in_size - 1)), coeffs[:, j])
    return w


def _aa_filter(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic filter (a = -0.5), as torch's antialiased bicubic uses it."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _bicubic_aa_matrix(in_size: int, out_size: int, scale_factor: float | None) -> np.ndarray:
    """[out, in] weights of torch's ``_upsample_bicubic2d_aa`` along one axis."""
    scale = float(_scale(in_size, out_size, scale_factor))
    support = 2.0 * scale if scale >= 1.0 else 2.0  # interp_size / 2, widened when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # C++ truncation toward zero
        hi = min(int(center + support + 0.5), in_size)
        taps = _aa_filter((np.arange(lo, hi) - center + 0.5) * invscale)
        total = taps.sum()
        w[i, lo:hi] = taps / total if total != 0 else taps
    return w


def _output_size(
    shape: Sequence[int],
    size: Sequence[int] | None,
    scale_factor: Sequence[float] | None,
) -> tuple[int, int]:
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if size is not None:
        return int(size[0]), int(size[1])
    # torch: int(input_size * scale) in double precision.
    return tuple(int(math.floor(n * float(s))) for n, s in zip(shape, scale_factor, strict=True))


def interpolate_bicubic(
    x: np.ndarray,
    size: Sequence[int] | None = None,
    scale_factor: Sequence[float] | None = None,
    antialias: bool = False,
) -> np.ndarray:
    """torch's ``F.interpolate(mode="bicubic", align_corners=False)`` on a grid [h, w, C].

    Args:
      x: [h, w, C] (channels last; torch's is [1, C, h, w]).
      size: output (H, W); or
      scale_factor: (sh, sw): output ``floor(h * sh)`` x ``floor(w * sw)``, and
        the sample positions use ``1 / s`` (not h / H), as torch does.
      antialias: torch's ``antialias=True`` kernel (PIL's filter).

    Returns:
      [H, W, C] float32.
    """
    x = np.asarray(x, np.float32)
    h, w = x.shape[:2]
    out_h, out_w = _output_size((h, w), size, scale_factor)
    sh, sw = (None, None) if scale_factor is None else (float(s) for s in scale_factor)
    if antialias:
        # torch's antialiased kernel leaves an axis of unchanged size alone, whatever the scale.
        wh = np.eye(h) if out_h == h else _bicubic_aa_matrix(h, out_h, sh)
        ww = np.eye(w) if out_w == w else _bicubic_aa_matrix(w, out_w, sw)
    else:
        wh, ww = _bicubic_matrix(h, out_h, sh), _bicubic_matrix(w, out_w, sw)
    y = np.einsum("Hh,hwc,Ww->HWc", wh, x.astype(np.float64), ww, optimize=True)
    return y.astype(np.float32)


def _zoom_axis(x: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Corner-aligned linear resampling of ``x`` along ``axis`` to ``n`` samples."""
    m = x.shape[axis]
    pos = np.zeros(n) if m == 1 or n == 1 else np.arange(n) * (m - 1) / (n - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, m - 1)
    hi = np.minimum(lo + 1, m - 1)
    w = (pos - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = n
    w = w.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def resample_posemb(
    grid: np.ndarray, new_hw: tuple[int, int], method: str = "linear"
) -> np.ndarray:
    """Resamples a position-embedding grid [gh, gw, D] -> [nh, nw, D].

    The same grid comes back unchanged for every method (as every family's
    code skips the resampling then).

    Args:
      grid: [gh, gw, D] embeddings of the patch positions.
      new_hw: the target grid (nh, nw).
      method: one of ``METHODS`` (see the module docstring).

    Returns:
      [nh, nw, D] float32.

    Raises:
      ValueError: an unknown method, or a target the offset convention cannot reach.
    """
    grid = np.asarray(grid, np.float32)
    new_hw = (int(new_hw[0]), int(new_hw[1]))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if tuple(grid.shape[:2]) == new_hw:
        return grid
    if method == "linear":
        shape = (*new_hw, grid.shape[-1])
        return np.asarray(jax.image.resize(grid, shape, method="linear", antialias=False))
    if method == "zoom":
        for axis, n in enumerate(new_hw):
            grid = _zoom_axis(grid, n, axis)
        return grid
    if method == "bicubic":
        return interpolate_bicubic(grid, size=new_hw)
    if method == "bicubic_antialias":
        return interpolate_bicubic(grid, size=new_hw, antialias=True)
    # bicubic_offset: the hub divides by M = sqrt(N) of its square grid on both axes.
    scale = tuple((n + HUB_OFFSET) / g for n, g in zip(new_hw, grid.shape[:2], strict=True))
    out = interpolate_bicubic(grid, scale_factor=scale)
    if out.shape[:2] != new_hw:  # the hub asserts the same
        raise ValueError(f"the offset convention gives a {out.shape[:2]} grid, not {new_hw}")
    return out
