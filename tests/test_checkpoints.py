"""pairviz_jax.checkpoints on files the tests write themselves, in the real key layouts.

Round trips of the original ViT / AugReg and big_vision ``.npz`` layouts
(scanned and not), position-embedding resampling, the class-token slot,
``dont_load``, and every malformed-file error, asserting its message.
"""

import os
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from pairviz_jax import checkpoints
from pairviz_jax.checkpoints import CheckpointError
from pairviz_jax.models import ResNet, ViT

POSEMB = "Transformer/posembed_input/pos_embedding"
TINY = dict(patch_size=(4, 4), width=16, depth=2, mlp_dim=32, num_heads=2)


def _init(model, size, seed=0):
    """Random variables of ``model``'s shapes (no ``model.init``: compiling it is slow)."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32) * 0.3), shapes
    )


def _flat(variables):
    return {
        k: np.asarray(v)
        for k, v in traverse_util.flatten_dict(variables["params"], sep="/").items()
    }


def _images(size, seed=1, batch=2):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, size, size, 3))


def _assert_same_params(a, b):
    fa, fb = _flat(a), _flat(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def _to_big_vision(flat, *, scanned, prefix="params/"):
    """Project (original ViT) names -> big_vision names; the class-token slot is removed."""
    out = {}
    blocks = {}
    for k, v in flat.items():
        if k == POSEMB:
            out[prefix + "pos_embedding"] = v[:, 1:] if "cls" in flat else v
            continue
        if k.startswith("Transformer/encoderblock_"):
            i, rest = k[len("Transformer/encoderblock_") :].split("/", 1)
            rest = (
                rest.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
                .replace("LayerNorm_2", "LayerNorm_1")
                .replace("MlpBlock_3", "MlpBlock_0")
            )
            blocks.setdefault(rest, {})[int(i)] = v
            continue
        out[prefix + k] = v
    for rest, per_block in blocks.items():
        if scanned:
            stacked = np.stack([per_block[i] for i in sorted(per_block)])
            out[f"{prefix}Transformer/encoderblock/{rest}"] = stacked
        else:
            for i, v in per_block.items():
                out[f"{prefix}Transformer/encoderblock_{i}/{rest}"] = v
    return out


@pytest.fixture(scope="module")
def vit_cls():
    """A tiny ViT with a class token and a projection head, and its variables (16 px)."""
    model = ViT(**TINY, class_token=True, pool_type="tok", proj_dim=8)
    return model, _init(model, 16)


def test_original_npz_round_trip(tmp_path, vit_cls):
    model, variables = vit_cls
    path = tmp_path / "ViT-tiny.npz"
    # The original ViT / AugReg layout is the project's own names, "/"-joined.
    np.savez(path, **_flat(variables))
    info = checkpoints.describe(path)
    assert (info["container"], info["layout"], info["family"]) == ("npz", "vit_npz", "vit")
    assert info["grid"] == (4, 4)
    rebuilt = checkpoints.model_from(path)
    assert (rebuilt.width, rebuilt.depth, rebuilt.mlp_dim, rebuilt.num_heads) == (16, 2, 32, 2)
    assert tuple(rebuilt.patch_size) == (4, 4)
    assert rebuilt.class_token and rebuilt.proj_dim == 8 and rebuilt.pool_type == "tok"
    assert rebuilt == model
    _assert_same_params(checkpoints.load(path, rebuilt), variables)


@pytest.mark.parametrize("scanned", [True, False])
@pytest.mark.parametrize("prefix", ["params/", ""])
def test_big_vision_npz_round_trip(tmp_path, scanned, prefix):
    model = ViT(**TINY, pool_type="gap", proj_dim=8)
    variables = _init(model, 16)
    path = tmp_path / "bv.npz"
    np.savez(path, **_to_big_vision(_flat(variables), scanned=scanned, prefix=prefix))
    with np.load(path) as z:
        if scanned:
            key = f"{prefix}Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel"
            assert z[key].shape == (2, 16, 2, 8)  # leading depth axis
    assert checkpoints.describe(path)["layout"] == "big_vision"
    rebuilt = checkpoints.model_from(path)
    assert rebuilt.depth == 2 and rebuilt.num_heads == 2 and not rebuilt.class_token
    _assert_same_params(checkpoints.load(path, rebuilt), variables)


def test_big_vision_class_token_gets_a_zero_position_slot(tmp_path, vit_cls):
    model, variables = vit_cls
    flat = _flat(variables)
    path = tmp_path / "bv_cls.npz"
    np.savez(path, **_to_big_vision(flat, scanned=True))
    pe = _flat(checkpoints.load(path, model))[POSEMB]
    assert pe.shape == (1, 17, 16)
    # big_vision adds positions before prepending the token: slot 0 is zero.
    np.testing.assert_array_equal(pe[:, 0], 0.0)
    np.testing.assert_array_equal(pe[:, 1:], flat[POSEMB][:, 1:])


def _grid_file(tmp_path, grid, *, cls=True, width=16, seed=0):
    """An original-layout .npz whose position grid is grid x grid (patch 2)."""
    model = ViT(patch_size=(2, 2), width=width, depth=1, mlp_dim=32, num_heads=2, class_token=cls)
    flat = _flat(_init(model, 2 * grid, seed))
    path = tmp_path / f"grid{grid}_{int(cls)}.npz"
    np.savez(path, **flat)
    return path, flat


def test_posemb_resampled_14_to_16(tmp_path):
    path, flat = _grid_file(tmp_path, 14)
    model = checkpoints.model_from(path)
    got = _flat(checkpoints.load(path, model, image_size=32))[POSEMB]
    assert got.shape == (1, 1 + 16 * 16, 16)
    np.testing.assert_array_equal(got[:, 0], flat[POSEMB][:, 0])  # class slot untouched
    old = flat[POSEMB][0, 1:].reshape(14, 14, 16)
    want = jax.image.resize(old, (16, 16, 16), method="linear", antialias=False)
    np.testing.assert_allclose(got[0, 1:].reshape(16, 16, 16), want, atol=1e-6)
    # The model runs at the new size.
    variables = checkpoints.load(path, model, image_size=32)
    _, out = jax.eval_shape(model.apply, variables, _images(32))
    assert out["tokens"].shape == (2, 256, 16)


def test_posemb_resampling_preserves_constant_and_matches_scipy_zoom(tmp_path):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    grid = rng.standard_normal((14, 14, 5)).astype(np.float32)
    got = checkpoints.resample_posemb(grid, (16, 16), method="zoom")
    np.testing.assert_allclose(got, ndimage.zoom(grid, (16 / 14, 16 / 14, 1), order=1), atol=1e-5)
    const = np.full((14, 14, 3), 0.25, np.float32)
    for method in ("linear", "zoom"):
        np.testing.assert_allclose(
            checkpoints.resample_posemb(const, (16, 20), method), 0.25, atol=1e-6
        )
    with pytest.raises(ValueError, match="method"):
        checkpoints.resample_posemb(grid, (16, 16), method="nearest")


def test_class_token_slot_kept_or_dropped(tmp_path):
    path, flat = _grid_file(tmp_path, 4)
    # The authors' model keeps the slot (the token gets its position, then leaves).
    dropped_after = ViT(patch_size=(2, 2), width=16, depth=1, mlp_dim=32, num_heads=2,
                        class_token=True, keep_class_token=False)  # fmt: skip
    got = _flat(checkpoints.load(path, dropped_after))
    np.testing.assert_array_equal(got[POSEMB], flat[POSEMB])
    np.testing.assert_array_equal(got["cls"], flat["cls"])
    # A model without a class token drops both the slot and the token.
    no_cls = ViT(patch_size=(2, 2), width=16, depth=1, mlp_dim=32, num_heads=2)
    got = _flat(checkpoints.load(path, no_cls))
    assert "cls" not in got
    np.testing.assert_array_equal(got[POSEMB], flat[POSEMB][:, 1:])


def test_dont_load_keeps_a_new_head_and_missing_head_is_loud(tmp_path):
    path, flat = _grid_file(tmp_path, 4)
    model = ViT(patch_size=(2, 2), width=16, depth=1, mlp_dim=32, num_heads=2, class_token=True,
                keep_class_token=False, proj_dim=6)  # fmt: skip
    with pytest.raises(CheckpointError) as err:
        checkpoints.load(path, model)
    msg = str(err.value)
    assert str(path) in msg and "missing from the file (2)" in msg
    assert "head/kernel" in msg and "head/bias" in msg and "dont_load" in msg
    init = _init(model, 8, seed=7)
    got = _flat(checkpoints.load(path, model, dont_load=("head/.*",), init_variables=init))
    np.testing.assert_array_equal(got["head/kernel"], _flat(init)["head/kernel"])
    assert sorted(got) == sorted(flat) + ["head/bias", "head/kernel"]
    for k in flat:
        np.testing.assert_array_equal(got[k], flat[k], err_msg=k)


def test_dont_load_initialises_with_rng_when_no_variables_given(tmp_path):
    model = ViT(patch_size=(2, 2), width=8, depth=1, mlp_dim=8, num_heads=1, proj_dim=4)
    flat = _flat(_init(ViT(patch_size=(2, 2), width=8, depth=1, mlp_dim=8, num_heads=1), 4))
    path = tmp_path / "no_head.npz"
    np.savez(path, **flat)
    a = _flat(checkpoints.load(path, model, dont_load=("head/.*",), rng=jax.random.PRNGKey(3)))
    # The same compiled init as `load` (compiling another costs seconds).
    want = _flat(checkpoints.jitted_init(model)(jax.random.PRNGKey(3), jnp.zeros((1, 4, 4, 3))))
    want = want["head/kernel"]
    np.testing.assert_array_equal(a["head/kernel"], want)
    np.testing.assert_array_equal(a["embedding/kernel"], flat["embedding/kernel"])


def test_the_models_shapes_are_traced_once_per_configuration():
    """Every load checks the file against ``model.init``'s shapes: traced once per model
    configuration and image shape (a figure loading 5 checkpoints traced it 5 times)."""
    from pairviz_jax.models import _shapes

    _shapes._abstract.cache_clear()
    settings = dict(patch_size=(2, 2), width=8, depth=1, mlp_dim=8, num_heads=1)
    a = _shapes.abstract_variables(ViT(**settings), (1, 4, 4, 3))
    b = _shapes.abstract_variables(ViT(**settings), (1, 4, 4, 3))  # an equal model
    assert a is b and _shapes._abstract.cache_info().misses == 1
    want = jax.eval_shape(ViT(**settings).init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
    assert shapes(a) == shapes(want)
    _shapes.abstract_variables(ViT(**settings), (1, 6, 6, 3))  # another shape: traced
    _shapes.abstract_variables(ViT(**{**settings, "width": 4}), (1, 4, 4, 3))  # another model
    assert _shapes._abstract.cache_info().misses == 3


def test_dont_load_also_ignores_file_keys(tmp_path, vit_cls):
    model, variables = vit_cls
    flat = _flat(variables)
    path = tmp_path / "with_pre_logits.npz"
    np.savez(path, **flat, **{"pre_logits/kernel": np.ones((16, 16), np.float32)})
    with pytest.raises(
        CheckpointError, match=r"unexpected in the file \(1\):\n    pre_logits/kernel"
    ):
        checkpoints.load(path, model)
    _assert_same_params(checkpoints.load(path, model, dont_load=("pre_logits/.*",)), variables)


def test_mismatch_lists_missing_unexpected_and_misshaped_with_file(tmp_path, vit_cls):
    model, variables = vit_cls
    flat = _flat(variables)
    del flat["Transformer/encoder_norm/scale"]
    flat["extra/thing"] = np.zeros(3, np.float32)
    flat["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"] = np.zeros((16, 48), np.float32)
    path = tmp_path / "broken.npz"
    np.savez(path, **flat)
    with pytest.raises(CheckpointError) as err:
        checkpoints.load(path, model)
    msg = str(err.value)
    assert msg.startswith(f"{path} (vit_npz layout, npz) does not fit the model:")
    assert "missing from the file (1):\n    Transformer/encoder_norm/scale" in msg
    assert "unexpected in the file (1):\n    extra/thing" in msg
    assert (
        "mis-shaped (1):\n    Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel: "
        "file (16, 48), model (16, 32)" in msg
    )


def test_wrong_number_of_heads_is_misshaped(tmp_path, vit_cls):
    _, variables = vit_cls
    path = tmp_path / "heads.npz"
    np.savez(path, **_flat(variables))
    four_heads = ViT(**{**TINY, "num_heads": 4}, class_token=True, pool_type="tok", proj_dim=8)
    with pytest.raises(
        CheckpointError, match=r"query/kernel: file \(16, 2, 8\), model \(16, 4, 4\)"
    ):
        checkpoints.load(path, four_heads)


def test_family_mismatch(tmp_path, vit_cls):
    _, variables = vit_cls
    path = tmp_path / "vit.npz"
    np.savez(path, **_flat(variables))
    with pytest.raises(
        CheckpointError, match=r"holds a vit \(vit_npz layout\) but the model is ResNet"
    ):
        checkpoints.load(path, ResNet(block_sizes=(1,), width=8, num_groups=2, proj_dim=4))


def test_heads_required_when_not_in_shapes(tmp_path):
    torch_like = {
        "patch_embed.proj.weight": np.zeros((20, 3, 4, 4), np.float32),
        "blocks.0.attn.qkv.weight": np.zeros((60, 20), np.float32),
    }
    path = tmp_path / "timm.safetensors"
    checkpoints.write_safetensors(path, torch_like)
    with pytest.raises(CheckpointError, match=r"number of heads is not determined.*width 20"):
        checkpoints.model_from(path)
    assert checkpoints.model_from(path, num_heads=5).num_heads == 5


def test_save_keeps_settings_shapes_do_not_give(tmp_path):
    model = ViT(**TINY, class_token=True, keep_class_token=False, proj_dim=8)
    variables = _init(model, 16)
    path = tmp_path / "paper.npz"
    checkpoints.save(path, variables, model)
    rebuilt = checkpoints.model_from(path)
    assert rebuilt == model
    _assert_same_params(checkpoints.load(path, rebuilt), variables)


def test_resnet_save_writes_bit_layout_and_round_trips(tmp_path):
    model = ResNet(block_sizes=(2, 1), width=8, num_groups=2, proj_dim=6)
    variables = _init(model, 32)
    path = tmp_path / "bit.npz"
    checkpoints.save(path, variables, model)
    with np.load(path) as z:
        assert "resnet/block1/unit02/b/group_norm/gamma" in z.files
        assert "resnet/block2/unit01/a/proj/standardized_conv2d/kernel" in z.files
    assert checkpoints.describe(path)["layout"] == "bit_npz"
    rebuilt = checkpoints.model_from(path)
    assert rebuilt == model
    _assert_same_params(checkpoints.load(path, rebuilt), variables)


def test_safetensors_round_trip_all_float_dtypes(tmp_path):
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.arange(4, dtype=np.float16),
        "c": np.arange(3).astype(ml_dtypes.bfloat16),
        "d": np.arange(5, dtype=np.int64),
        "e": np.zeros((0, 4), np.float32),
    }
    path = tmp_path / "x.safetensors"
    checkpoints.write_safetensors(path, arrays, metadata={"format": "np"})
    container, got = checkpoints._io.read_arrays(path)
    assert container == "safetensors" and sorted(got) == sorted(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k].astype(np.float64), v.astype(np.float64))


# ----------------------------------------------------------------- malformed files


def _valid_npz(tmp_path, vit_cls):
    path = tmp_path / "good.npz"
    np.savez(path, **_flat(vit_cls[1]))
    return path


def test_truncated_npz(tmp_path, vit_cls):
    data = _valid_npz(tmp_path, vit_cls).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path}: truncated or corrupt"):
        checkpoints.load(path, vit_cls[0])


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    checkpoints.write_safetensors(path, {"embedding/kernel": np.ones((4, 4, 3, 16), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(
        CheckpointError, match=rf"{path}: truncated safetensors file: 'embedding/kernel'"
    ):
        checkpoints.read(path)
    path.write_bytes(data[:20])  # the header itself is cut
    with pytest.raises(CheckpointError, match=r"truncated safetensors file \(header of \d+ bytes"):
        checkpoints.read(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is a README\n", b"\x89PNG\r\n\x1a\n" + bytes(64), b"\x00" * 32],
    ids=["empty", "text", "png", "zeros"],
)
def test_not_a_checkpoint(tmp_path, vit_cls, content):
    path = tmp_path / "weights.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{path}: (the file is empty|not a checkpoint)"):
        checkpoints.load(path, vit_cls[0])


def test_missing_file(tmp_path, vit_cls):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        checkpoints.load(tmp_path / "nope.npz", vit_cls[0])


def test_unknown_layout_lists_keys(tmp_path, vit_cls):
    path = tmp_path / "other.npz"
    np.savez(path, **{"conv1/w": np.zeros(3), "fc/b": np.zeros(2)})
    with pytest.raises(CheckpointError, match=rf"{path}: no known weight layout.*'conv1/w'"):
        checkpoints.load(path, vit_cls[0])


def test_foreign_zip(tmp_path, vit_cls):
    path = tmp_path / "archive.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hi")
    with pytest.raises(CheckpointError, match=r"neither a \.npz .* nor a torch\.save file"):
        checkpoints.load(path, vit_cls[0])


class _Payload:
    """Unpickling this would create ``marker``: proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_never_executed(tmp_path, vit_cls):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "evil.pth"
    legacy.write_bytes(pickle.dumps({"w": _Payload(str(marker))}, protocol=2))
    obj_npz = tmp_path / "evil.npz"
    np.save(tmp_path / "m.npy", np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(obj_npz, "w") as z:
        z.write(tmp_path / "m.npy", "embedding/kernel.npy")
    with pytest.raises(CheckpointError, match=r"unreadable \.npz member"):
        checkpoints.load(obj_npz, vit_cls[0])
    try:
        import torch  # noqa: F401

        expected = (CheckpointError, r"torch\.load\(weights_only=True\) refused")
    except ImportError:
        expected = (ImportError, r"torch\.load\(weights_only=True\), which needs PyTorch")
    with pytest.raises(expected[0], match=expected[1]):
        checkpoints.load(legacy, vit_cls[0])
    assert not os.path.exists(marker)


def test_sniff_header_length_sanity(tmp_path):
    path = tmp_path / "fake.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{" + bytes(7))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        checkpoints.sniff(path)
