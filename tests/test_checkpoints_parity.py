"""Parity with the reference PyTorch implementations, offline, from committed fixtures.

``tools/make_parity_fixtures.py`` built small timm ViT / ResNetV2 and Hugging
Face ``ViTModel`` models with random weights, saved the weights in every
format and their outputs on fixed inputs (``parity_refs.npz``). Here the
files are loaded by ``pairviz_jax.checkpoints`` and the project's models must
reproduce the tokens, embedding and attention to 1e-4 (float32). The ``.pth``
files are read without torch (``checkpoints._torch_zip``).
"""

import os

import jax
import numpy as np
import pytest

from pairviz_jax import checkpoints, explain
from pairviz_jax.models import ResNet, ViT

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOL = 1e-4
HEADS = 4  # the fixtures' ViTs; fused torch attention does not tell


@pytest.fixture(scope="module")
def refs():
    with np.load(os.path.join(FIXTURES, "parity_refs.npz")) as z:
        return {k: z[k] for k in z.files}


_apply = jax.jit(lambda model, variables, x: model.apply(variables, x), static_argnums=0)


def _vit_outputs(model, variables, images):
    emb, out = model.apply(variables, images)
    attention = out["attention"]
    return np.asarray(out["tokens"]), np.asarray(emb), np.asarray(attention)


def _check(name, got, refs):
    for part, value in zip(("tokens", "embedding", "attention"), got, strict=False):
        want = refs[f"{name}/{part}"]
        assert value.shape == want.shape, (part, value.shape, want.shape)
        diff = float(np.abs(value - want).max())
        assert diff <= TOL, f"{name} {part}: max abs diff {diff:.2e} > {TOL}"


@pytest.mark.parametrize(
    "name,file,known,expected",
    [
        # timm: class token kept, token pooling, the classifier as a per-token projection.
        ("timm_vit", "timm_vit.safetensors", {"num_heads": HEADS},
         dict(class_token=True, keep_class_token=True, pool_type="tok", proj_dim=16)),
        # The authors' layout (``module.`` prefix): class token dropped, mean pool.
        ("authors_vit", "authors_vit.safetensors", {"num_heads": HEADS},
         dict(class_token=True, keep_class_token=False, pool_type="gap", proj_dim=16)),
        ("big_vision", "big_vision.npz", {},
         dict(class_token=False, pool_type="gap", proj_dim=16, num_heads=HEADS)),
    ],
)  # fmt: skip
def test_vit_parity(refs, name, file, known, expected):
    path = os.path.join(FIXTURES, file)
    model = checkpoints.model_from(path, **known)
    assert isinstance(model, ViT)
    assert (model.width, model.depth, model.mlp_dim, tuple(model.patch_size)) == (32, 2, 64, (8, 8))
    for key, value in expected.items():
        assert getattr(model, key) == value, key
    variables = checkpoints.load(path, model)
    _check(name, _vit_outputs(model, variables, refs["vit_images"]), refs)


def test_original_npz_parity_with_resampled_grid(refs):
    """timm read the 4x4-grid file into a 40-px model (5x5): same resampling here."""
    path = os.path.join(FIXTURES, "vit_npz.npz")
    assert checkpoints.describe(path)["grid"] == (4, 4)
    model = checkpoints.model_from(path, pool_type="gap")  # timm global_pool="avg"
    assert model.num_heads == HEADS and model.class_token
    variables = checkpoints.load(path, model, image_size=40)
    _check("vit_npz", _vit_outputs(model, variables, refs["vit_npz/images"]), refs)


def test_hf_parity_and_pooler_is_pre_logits(refs):
    path = os.path.join(FIXTURES, "hf_vit.safetensors")
    model = checkpoints.model_from(path, num_heads=HEADS)
    assert model.class_token and model.pool_type == "tok" and model.proj_dim is None
    with pytest.raises(checkpoints.CheckpointError, match=r"unexpected.*\n.*pre_logits/bias"):
        checkpoints.load(path, model)
    variables = checkpoints.load(path, model, dont_load=("pre_logits/.*",))
    # HF's LayerNorm eps is 1e-12 against the ViT's 1e-6: well inside the tolerance.
    assert refs["hf_vit/layer_norm_eps"] == np.float32(1e-12)
    _check("hf_vit", _vit_outputs(model, variables, refs["vit_images"]), refs)


def test_hf_in_model_names_of_transformers_5(tmp_path):
    """transformers >= 5 renames inside the model (q_proj, mlp.fc1); both load alike."""
    src = os.path.join(FIXTURES, "hf_vit.safetensors")
    arrays = checkpoints.read(src)
    _, raw = checkpoints._io.read_arrays(src)
    renames = [
        ("encoder.layer.", "layers."),
        ("attention.attention.query", "attention.q_proj"),
        ("attention.attention.key", "attention.k_proj"),
        ("attention.attention.value", "attention.v_proj"),
        ("attention.output.dense", "attention.o_proj"),
        ("intermediate.dense", "mlp.fc1"),
        ("output.dense", "mlp.fc2"),
    ]
    renamed = {}
    for key, value in raw.items():
        for a, b in renames:
            key = key.replace(a, b)
        renamed[key] = value
    assert "layers.0.attention.q_proj.weight" in renamed
    path = tmp_path / "hf5.safetensors"
    checkpoints.write_safetensors(path, renamed)
    again = checkpoints.read(path)
    assert sorted(again.params) == sorted(arrays.params) and not again.leftovers
    for k, v in arrays.params.items():
        np.testing.assert_array_equal(again.params[k], v, err_msg=k)


@pytest.mark.parametrize("wrapper", ["state_dict.", "model.module."])
def test_wrapped_state_dicts(tmp_path, wrapper):
    """``{"state_dict": ...}`` checkpoints and DataParallel's ``module.`` are unwrapped."""
    src = checkpoints.read(os.path.join(FIXTURES, "timm_resnetv2.safetensors"))
    _, raw = checkpoints._io.read_arrays(os.path.join(FIXTURES, "timm_resnetv2.safetensors"))
    path = tmp_path / "wrapped.safetensors"
    checkpoints.write_safetensors(path, {wrapper + k: v for k, v in raw.items()})
    got = checkpoints.read(path)
    assert got.layout == "timm_resnetv2" and sorted(got.params) == sorted(src.params)


def test_authors_vit_pth(refs):
    path = os.path.join(FIXTURES, "authors_vit.pth")
    assert checkpoints.sniff(path) == "torch"
    model = checkpoints.model_from(path, num_heads=HEADS)
    assert not model.keep_class_token and model.proj_dim == 16
    _check(
        "authors_vit", _vit_outputs(model, checkpoints.load(path, model), refs["vit_images"]), refs
    )


RESNET_FILES = ["bit.npz", "timm_resnetv2.safetensors", "authors_resnet.safetensors"]


@pytest.mark.parametrize("file", RESNET_FILES + ["authors_resnet.pth"])
def test_resnet_parity(refs, file):
    path = os.path.join(FIXTURES, file)
    model = checkpoints.model_from(path, num_groups=4)
    assert model == ResNet(block_sizes=(2, 1, 1), width=8, num_groups=4, proj_dim=16)
    variables = checkpoints.load(path, model)
    emb, out = _apply(model, variables, refs["resnet_images"])
    _check("resnet", (np.asarray(out["tokens"]), np.asarray(emb)), refs)


def test_convert_authors_checkpoint_once(tmp_path, refs):
    """The one-time conversion keeps the paper's settings in the project's .npz."""
    src = os.path.join(FIXTURES, "authors_vit.safetensors")
    dst = tmp_path / "paper_vit.npz"
    model, _ = checkpoints.convert_file(src, dst, num_heads=HEADS)
    assert checkpoints.describe(dst)["layout"] == "vit_npz"
    again = checkpoints.model_from(dst)  # no num_heads needed any more
    assert again == model and not again.keep_class_token
    _check(
        "authors_vit", _vit_outputs(again, checkpoints.load(dst, again), refs["vit_images"]), refs
    )


def test_paired_maps_for_both_families(refs):
    """The paper's ViT (class token dropped, projection, gap) and BiT ResNet share one call."""
    vit_path = os.path.join(FIXTURES, "authors_vit.safetensors")
    vit = checkpoints.model_from(vit_path, num_heads=HEADS)
    res_path = os.path.join(FIXTURES, "bit.npz")
    res = checkpoints.model_from(res_path, num_groups=4)
    assert vit.has_attention and not res.has_attention
    for model, path, images in (
        (vit, vit_path, refs["vit_images"]),
        (res, res_path, refs["resnet_images"]),
    ):
        variables = checkpoints.load(path, model)
        got = explain.paired_maps(model, variables, images[:1], images[1:], upsampled=False)
        gh, gw = model.grid(images.shape)
        assert got["map_a"].shape == got["map_b"].shape == (1, gh, gw)
        emb = np.asarray(_apply(model, variables, images)[0])
        cos = emb[0] @ emb[1] / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1])
        np.testing.assert_allclose(got["score"][0], cos, atol=1e-5)
        if not model.has_attention:
            # No rollout (Stylianou et al. 2019): each map splits the cosine over locations.
            np.testing.assert_allclose(np.sum(got["map_a"]), cos, atol=1e-5)
            np.testing.assert_allclose(np.sum(got["map_b"]), cos, atol=1e-5)
