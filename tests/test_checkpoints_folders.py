"""Hugging Face folders, layout variants and bad files, built here from the family fixtures.

Every bad file must fail with a ``CheckpointError`` whose first line names the
file or folder and says what did not match.
"""

import json
import os
import shutil

import numpy as np
import pytest

from pairviz_jax import checkpoints
from pairviz_jax.checkpoints import CheckpointError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _fixture(name):
    return os.path.join(FIXTURES, name)


def _raw(path):
    """The file's own arrays (keys as written)."""
    return checkpoints._io.read_arrays(path)[1]


def _copy_folder(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(_fixture(name), dst)
    return dst


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def _same_params(a, b):
    a, b = checkpoints.read(a), checkpoints.read(b)
    assert sorted(a.params) == sorted(b.params)
    for k in a.params:  # torch layouts keep attention fused over heads: compare flat
        np.testing.assert_array_equal(a.params[k].ravel(), b.params[k].ravel(), err_msg=k)


def _first_line(excinfo) -> str:
    return str(excinfo.value).splitlines()[0]


# ------------------------------------------------------------------ folders and variants


def test_sharded_folder_reads_like_one_file(tmp_path):
    arrays = _raw(_fixture("dinov2_hf/model.safetensors"))
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(_fixture("dinov2_hf/config.json"), folder)
    keys = sorted(arrays)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    weight_map = {}
    for name, part in shards.items():
        checkpoints.write_safetensors(folder / name, {k: arrays[k] for k in part})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert checkpoints.sniff(folder) == "safetensors"
    _same_params(folder, _fixture("dinov2_hf"))
    assert len(checkpoints.describe(folder)["files"]) == 2


def test_pytorch_model_bin_folder():
    """Hugging Face's older weight file (torch.save, read without torch): the same params."""
    folder = _fixture("clip_hf_bin")  # tools/make_torch_fixtures.py
    assert checkpoints.sniff(folder) == "torch"
    _same_params(folder, _fixture("clip_hf"))


def test_dinov2_in_model_names_of_transformers_5(tmp_path):
    """q_proj / o_proj and the SwiGLU's gate_proj / up_proj / down_proj load alike."""
    arrays = _raw(_fixture("dinov2_swiglu_hf/model.safetensors"))
    renamed = {}
    for key, value in arrays.items():
        if ".mlp.weights_in." in key:
            gate, up = np.split(value, 2, axis=0)
            renamed[key.replace("weights_in", "gate_proj")] = gate
            renamed[key.replace("weights_in", "up_proj")] = up
            continue
        for a, b in [("attention.attention.query", "attention.q_proj"),
                     ("attention.attention.key", "attention.k_proj"),
                     ("attention.attention.value", "attention.v_proj"),
                     ("attention.output.dense", "attention.o_proj"),
                     ("mlp.weights_out", "mlp.down_proj")]:  # fmt: skip
            key = key.replace(a, b)
        renamed[key] = value
    path = tmp_path / "dinov2_5.safetensors"
    checkpoints.write_safetensors(path, renamed)
    _same_params(path, _fixture("dinov2_swiglu_hf/model.safetensors"))


def test_hub_chunked_blocks(tmp_path):
    """``DinoVisionTransformer``'s default ``block_chunks=1``: ``blocks.0.{i}`` (global i)."""
    arrays = _raw(_fixture("dinov2_hub.safetensors"))
    chunked = {
        (f"blocks.0.{k[len('blocks.') :]}" if k.startswith("blocks.") else k): v
        for k, v in arrays.items()
    }
    assert "blocks.0.1.norm1.weight" in chunked
    path = tmp_path / "chunked.safetensors"
    checkpoints.write_safetensors(path, chunked)
    _same_params(path, _fixture("dinov2_hub.safetensors"))


def test_timm_style_registers(tmp_path):
    """timm names a DINOv2's registers ``reg_token``; without a mask token it is a timm file."""
    arrays = _raw(_fixture("dinov2_reg_hub.safetensors"))
    arrays["reg_token"] = arrays.pop("register_tokens")
    del arrays["mask_token"]
    path = tmp_path / "timm_reg.safetensors"
    checkpoints.write_safetensors(path, arrays)
    ckpt = checkpoints.read(path)
    assert ckpt.layout == "timm_vit" and ckpt.params["Transformer/reg"].shape == (1, 2, 32)
    hub = checkpoints.read(_fixture("dinov2_reg_hub.safetensors"))
    assert sorted(ckpt.params) == sorted(hub.params)


def test_big_vision_siglip_unscanned(tmp_path):
    arrays = _raw(_fixture("siglip_bv.npz"))
    unscanned = {}
    for key, value in arrays.items():
        if "Transformer/encoderblock/" in key:
            for i in range(value.shape[0]):
                unscanned[key.replace("encoderblock/", f"encoderblock_{i}/")] = value[i]
        else:
            unscanned[key] = value
    path = tmp_path / "unscanned.npz"
    np.savez(path, **unscanned)
    _same_params(path, _fixture("siglip_bv.npz"))


def test_hf_siglip_and_big_vision_hold_the_same_model():
    """The two SigLIP fixtures are one set of weights in two layouts."""
    _same_params(_fixture("siglip_hf"), _fixture("siglip_bv.npz"))


@pytest.mark.parametrize("name,model_type", [("clip_hf", "clip"), ("siglip_hf", "siglip")])
def test_two_tower_folders(tmp_path, name, model_type):
    """A whole CLIPModel / SiglipModel: ``vision_model.*`` kept, the text tower dropped."""
    src = _fixture(name)
    arrays = _raw(os.path.join(src, "model.safetensors"))
    arrays = {(k if k.startswith(("vision_model.", "visual_")) else f"vision_model.{k}"): v
              for k, v in arrays.items()}  # fmt: skip
    arrays.update({
        "text_model.embeddings.token_embedding.weight": np.zeros((50, 16), np.float32),
        "text_model.final_layer_norm.weight": np.ones(16, np.float32),
        "logit_scale": np.zeros((), np.float32),
    })  # fmt: skip
    if model_type == "clip":
        arrays["text_projection.weight"] = np.zeros((16, 16), np.float32)
    folder = tmp_path / model_type
    folder.mkdir()
    checkpoints.write_safetensors(folder / "model.safetensors", arrays)
    with open(os.path.join(src, "config.json")) as f:
        vision = json.load(f)
    config = dict(model_type=model_type, vision_config=vision, text_config=dict(hidden_size=16))
    if model_type == "clip":
        config["projection_dim"] = vision.pop("projection_dim")
        vision["projection_dim"] = 512  # a CLIPModel's vision_config carries an unused default
    (folder / "config.json").write_text(json.dumps(config))
    _same_params(folder, src)
    info = checkpoints.describe(folder)
    assert info["spec"] == checkpoints.describe(src)["spec"]
    assert list(info["dropped"].values()) == [4 if model_type == "clip" else 3]


def test_convert_keeps_the_family_convention(tmp_path):
    """A converted hub file keeps the hub's resampling and DINOv2's normalisation."""
    src = _fixture("dinov2_hub.safetensors")
    dst = tmp_path / "dinov2.npz"
    model, _ = checkpoints.convert_file(src, dst, num_heads=4)
    info = checkpoints.describe(dst)
    assert (info["layout"], info["model_family"]) == ("vit_npz", "dinov2")
    assert info["interpolation"] == "bicubic_offset"
    assert info["normalization"]["name"] == "imagenet"
    again = checkpoints.model_from(dst)
    assert again == model
    with np.load(_fixture("families_refs.npz")) as z:
        images, want = z["images@8x12"], z["dinov2_hub@8x12/tokens"]
    variables = checkpoints.load(dst, again, image_size=(8, 12))
    tokens = np.asarray(again.apply(variables, images)[1]["tokens"])
    assert np.abs(tokens - want).max() <= 1e-5 * np.abs(want).max()


# ------------------------------------------------------------------ bad folders


def test_folder_without_config(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(_fixture("dinov2_hf/model.safetensors"), folder)
    with pytest.raises(CheckpointError) as e:
        checkpoints.read(folder)
    assert _first_line(e) == (
        f"{folder}: a folder without config.json: expected a Hugging Face model folder "
        "(config.json with model.safetensors or pytorch_model.bin)"
    )
    with pytest.raises(CheckpointError, match="without config.json"):
        checkpoints.sniff(folder)


def test_folder_without_weights(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    shutil.copy(_fixture("dinov2_hf/config.json"), folder)
    with pytest.raises(CheckpointError) as e:
        checkpoints.model_from(folder)
    assert _first_line(e).startswith(f"{folder}: config.json but no weights (expected one of")


def test_truncated_safetensors_in_a_folder(tmp_path):
    folder = _copy_folder(tmp_path, "dinov2_hf")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError) as e:
        checkpoints.describe(folder)
    assert _first_line(e).startswith(f"{weights}: truncated safetensors file: '")


def test_index_with_missing_shard(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    shutil.copy(_fixture("dinov2_hf/config.json"), folder)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as e:
        checkpoints.read(folder)
    assert _first_line(e) == (
        f"{folder / 'model.safetensors.index.json'}: shards listed but missing: "
        "['model-00001-of-00002.safetensors']"
    )


def test_unreadable_config(tmp_path):
    folder = _copy_folder(tmp_path, "siglip_hf")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"^{folder / 'config.json'}: unreadable JSON"):
        checkpoints.read(folder)


@pytest.mark.parametrize(
    "name,changes,message",
    [
        ("dinov2_reg_hf", dict(num_register_tokens=4),
         "config.json says num_register_tokens=4 but the weights have 2"),
        ("dinov2_hf", dict(model_type="clip_vision_model"),
         "config.json says model_type 'clip_vision_model' but the weights are a hf_dinov2 layout "
         "(expected model_type 'dinov2' or 'dinov2_with_registers')"),
        ("siglip_hf", dict(hidden_act="relu"),
         "config.json's hidden_act 'relu' is not supported (known: ['gelu', 'gelu_fast', "
         "'gelu_new', 'gelu_python', 'gelu_pytorch_tanh', 'quick_gelu'])"),
        ("clip_hf", dict(patch_size=8),
         "config.json says patch_size=(8, 8) but the weights have (4, 4)"),
        ("clip_hf", dict(projection_dim=512),
         "config.json says projection_dim=512 but the weights have 16"),
    ],
)  # fmt: skip
def test_config_contradicting_the_weights(tmp_path, name, changes, message):
    folder = _copy_folder(tmp_path, name)
    _edit_config(folder, **changes)
    with pytest.raises(CheckpointError) as e:
        checkpoints.read(folder)
    assert _first_line(e) == f"{folder}: {message}"


def test_config_folder_with_foreign_weights(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(_fixture("dinov2_hf/config.json"), folder)
    shutil.copy(_fixture("deit.safetensors"), folder / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        checkpoints.read(folder)
    assert _first_line(e) == (
        f"{folder}: a config.json folder, but the weights are a timm_deit layout, not a Hugging "
        "Face one"
    )


def test_config_settings_win_over_the_family_defaults(tmp_path):
    folder = _copy_folder(tmp_path, "siglip_hf")
    _edit_config(folder, hidden_act="gelu", layer_norm_eps=1e-5, num_attention_heads=2)
    model = checkpoints.model_from(folder)
    assert (model.mlp_act, model.layer_norm_eps, model.num_heads) == ("gelu", 1e-5, 2)
    assert checkpoints.model_from(folder, num_heads=8).num_heads == 8  # known wins


# ------------------------------------------------------------------ files that do not fit


def _load_error(path, **known):
    model = checkpoints.model_from(path, **known)
    with pytest.raises(CheckpointError) as e:
        checkpoints.load(path, model)
    return _first_line(e), str(e.value)


@pytest.mark.parametrize("file", ["dinov2_reg_hf", "dinov2_reg_hub.safetensors"])
def test_registers_into_a_model_without(file):
    path = _fixture(file)
    first, full = _load_error(path, num_heads=4, num_registers=0)
    assert first == (
        f"{path}: this dinov2 file has 2 register tokens but the model has num_registers=0; "
        "build it with checkpoints.model_from(path) or pass num_registers=2"
    )
    assert "unexpected in the file (1):\n    Transformer/reg" in full


def test_model_with_registers_and_a_file_without():
    path = _fixture("dinov2_hf")
    first, _ = _load_error(path, num_registers=4)
    assert first == f"{path}: the model has 4 register tokens but this dinov2 file has none"


def _without(tmp_path, src, drop_pattern, name):
    arrays = {k: v for k, v in _raw(src).items() if not _matches(drop_pattern, k)}
    path = tmp_path / name
    checkpoints.write_safetensors(path, arrays)
    return path


def _matches(pattern, key):
    import re

    return re.fullmatch(pattern, key) is not None


@pytest.mark.parametrize("kind", ["openclip", "hf"])
def test_clip_without_projection_when_proj_dim_is_asked(tmp_path, kind):
    if kind == "openclip":
        path = _without(
            tmp_path, _fixture("openclip.safetensors"), r"visual\.proj", "noproj.safetensors"
        )
    else:
        path = _copy_folder(tmp_path, "clip_hf")
        weights = path / "model.safetensors"
        arrays = {k: v for k, v in _raw(weights).items() if k != "visual_projection.weight"}
        checkpoints.write_safetensors(weights, arrays)
        _edit_config(path, architectures=["CLIPVisionModel"], projection_dim=None)
    assert checkpoints.model_from(path, num_heads=4).proj_dim is None  # the file's own model
    first, _ = _load_error(path, num_heads=4, proj_dim=16)
    assert first == (
        f"{path}: this clip file has no projection (OpenAI/OpenCLIP 'visual.proj', Hugging Face "
        "'visual_projection'), but the model asks for proj_dim=16: use proj_dim=None for the "
        "width-32 class token, or dont_load=['head/.*'] for a new projection"
    )


def test_siglip_without_map_head_and_pool_map(tmp_path):
    folder = _copy_folder(tmp_path, "siglip_hf")
    weights = folder / "model.safetensors"
    arrays = {k: v for k, v in _raw(weights).items() if not k.startswith("head.")}
    checkpoints.write_safetensors(weights, arrays)
    _edit_config(folder, vision_use_head=False)
    assert checkpoints.model_from(folder).pool_type == "gap"
    first, full = _load_error(folder, pool_type="map")
    assert first == (
        f"{folder}: pool_type='map' needs the attention-pooling head (big_vision 'MAPHead_0', "
        "Hugging Face 'head.*') but this siglip file has none; use pool_type='gap', or "
        "dont_load=['MAPHead_0/.*'] to train a new head"
    )
    assert "missing from the file (15)" in full
    # With dont_load the head is initialised and the rest loads.
    model = checkpoints.model_from(folder, pool_type="map")
    variables = checkpoints.load(folder, model, dont_load=["MAPHead_0/.*"])
    assert variables["params"]["MAPHead_0"]["probe"].shape == (1, 1, 32)


def test_map_head_file_with_another_pooling():
    path = _fixture("siglip_bv.npz")
    first, _ = _load_error(path, pool_type="gap")
    assert first == (
        f"{path}: this siglip file has an attention-pooling head (MAPHead_0) but the model pools "
        "with pool_type='gap'; use pool_type='map', or dont_load=['MAPHead_0/.*'] to ignore the "
        "head"
    )
    model = checkpoints.model_from(path, pool_type="gap")
    checkpoints.load(path, model, dont_load=["MAPHead_0/.*"])  # fits once told


@pytest.mark.parametrize(
    "file,known,message",
    [
        ("deit.safetensors", dict(num_heads=4, distill_token=False),
         "this deit file has a distillation token (DeiT) but the model has distill_token=False; "
         "pass distill_token=True"),
        ("dinov2_swiglu_hf", dict(mlp_act="gelu"),
         "this dinov2 file has a SwiGLU MLP but the model has mlp_act='gelu'; pass "
         "mlp_act='swiglu'"),
        ("dinov2_hf", dict(layer_scale=None),
         "this dinov2 file has layer scales (ls1, ls2) but the model has none; pass "
         "layer_scale=1.0"),
        ("clip_hf", dict(ln_pre=False),
         "this clip file has a pre-encoder LayerNorm (ln_pre) but the model has ln_pre=False"),
        ("siglip_hf", dict(class_token=True, pool_type="map"),
         "the model has a class token but this siglip file has none; pass class_token=False"),
        ("clip_hf", dict(proj_dim=None),
         "this clip file has a projection or classifier 'head' (16 outputs) but the model has "
         "proj_dim=None; pass proj_dim=16 or dont_load=['head/.*'] to ignore it"),
    ],
)  # fmt: skip
def test_structural_mismatches_in_one_line(file, known, message):
    path = _fixture(file)
    first, full = _load_error(path, **known)
    assert first == f"{path}: {message}"
    assert f"{path} (" in full.splitlines()[1]  # then the full key listing


def test_torchscript_archive_is_refused_with_a_way_out(tmp_path):
    """OpenAI's CLIP release is a TorchScript archive: never run, one line on converting it."""
    import zipfile

    path = tmp_path / "ViT-B-32.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("data.pkl", "constants.pkl", "code/__torch__/model.py", "data/0"):
            z.writestr(f"ViT-B-32/{name}", b"")
    with pytest.raises(CheckpointError) as e:
        checkpoints.read(path)
    assert _first_line(e).startswith(f"{path}: a TorchScript archive (e.g. OpenAI's CLIP .pt")
