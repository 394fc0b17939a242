"""Fixtures of PyTorch's own ``torch.save`` files, for the torch-free reader's tests.

* ``torch_variants.pth``: every storage dtype, transposed, sliced, shared-storage, scalar,
  empty and ``nn.Parameter`` tensors in nested dicts; ``torch_variants.npz`` holds what
  torch itself reads back (bfloat16 as float32), flattened with ``.`` keys.
* ``clip_hf_bin/``: the ``clip_hf`` fixture folder with ``pytorch_model.bin`` instead of
  ``model.safetensors`` (Hugging Face's older weight file).

Needs torch (CPU build). Run from the repository root:

    python tools/make_torch_fixtures.py [--out tests/fixtures]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil

import numpy as np


def _flat(obj, prefix, out, torch):
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        out[prefix] = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flat(v, f"{prefix}.{k}" if prefix else str(k), out, torch)


def variants(out_dir: str) -> None:
    import torch

    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5) / 7
    tensors = {
        "f64": base.double(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": (base * 7).long(),
        "i32": (base * 7).int(),
        "i16": (base * 7).short(),
        "i8": (base * 7).to(torch.int8),
        "u8": (base * 7).to(torch.uint8),
        "bool": base > 4,
        "transposed": base.transpose(0, 2),
        "sliced": base[1:, ::2, 1:4],
        "shared_a": base[0],
        "shared_b": base[2],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(base.clone()),
        "nested": collections.OrderedDict(x=base[1, 1]),
    }
    obj = {"state_dict": tensors, "epoch": 3, "note": "not a tensor"}
    torch.save(obj, os.path.join(out_dir, "torch_variants.pth"))
    back = torch.load(os.path.join(out_dir, "torch_variants.pth"), weights_only=True)
    flat: dict[str, np.ndarray] = {}
    _flat(back, "", flat, torch)
    np.savez(os.path.join(out_dir, "torch_variants.npz"), **flat)


def clip_bin(out_dir: str) -> None:
    import torch
    from safetensors.numpy import load_file

    src = os.path.join(out_dir, "clip_hf")
    dst = os.path.join(out_dir, "clip_hf_bin")
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), dst)
    arrays = load_file(os.path.join(src, "model.safetensors"))
    torch.save(
        {k: torch.from_numpy(v) for k, v in arrays.items()},
        os.path.join(dst, "pytorch_model.bin"),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("tests", "fixtures"))
    args = p.parse_args()
    variants(args.out)
    clip_bin(args.out)


if __name__ == "__main__":
    main()
