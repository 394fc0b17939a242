"""Models the benchmark scripts measure: the demo run and DINOv2-S/14.

DINOv2-S/14 comes from ``--dinov2 FILE``: either a weight file or folder that
``pairviz_jax.checkpoints`` loads, or ``STEM.npz`` + ``STEM.json`` (flat "/"-joined
parameters and the ``ViT`` keyword arguments), a stand-in written with the loaders of a
branch not yet merged.
"""

from __future__ import annotations

import json
import os

import numpy as np
from flax import traverse_util

from pairviz_jax.models import ViT

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load(spec: str, image_size: int = 224):
    """``"demo:WORKDIR"`` (a train.py run) or a DINOv2 file (module doc) -> ``LoadedModel``."""
    from pairviz_jax import plotting
    from pairviz_jax.plotting.loading import LoadedModel

    if spec.startswith("demo:"):
        return plotting.load_run(spec[len("demo:") :])
    stem, ext = os.path.splitext(spec)
    if ext == ".npz" and os.path.exists(stem + ".json"):
        with open(stem + ".json") as f:
            kw = json.load(f)
        kw["patch_size"] = tuple(kw["patch_size"])
        model = ViT(**kw)
        with np.load(spec) as z:
            params = traverse_util.unflatten_dict({k: z[k] for k in z.files}, sep="/")
        mean, std = IMAGENET
        label = f"DINOv2-S/14 ({kw['pool_type']})"
        return LoadedModel(model, {"params": params}, (image_size, image_size), mean, std, label)
    return plotting.load_weights(spec, image_size=image_size, normalization="imagenet")
