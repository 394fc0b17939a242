"""Public weight files and Hugging Face folders in, the project's ``.npz`` out.

Three lines load any supported file or folder, the format coming from the
files themselves::

    ckpt = checkpoints.read("dinov2-small/")           # optional: read once
    model = checkpoints.model_from(ckpt)               # or model_from(path, pool_type="gap")
    variables = checkpoints.load(ckpt, model, image_size=224)

``describe(path)`` says what a file holds (family, layout, settings, position
grid, the family's position-embedding resampling and input normalisation).

Containers: ``.npz``, ``.safetensors`` (read with NumPy alone), ``torch.save``
files (optional ``torch`` extra, ``weights_only=True``; pickles are never
executed) and Hugging Face folders (``config.json`` + weights). Layouts, one
module each under ``formats/``: original ViT / AugReg, big_vision and SigLIP
``.npz``; timm ViT and DeiT (distilled); Hugging Face ViT, Dinov2 (with
registers), CLIP and SigLIP; the DINOv2 hub's state dicts; OpenAI / OpenCLIP
CLIP; BiT ``.npz``; timm ResNetV2; the authors' ViT and ResNet (Black et al.,
WACV 2022).

Loading merges the file into the model's parameters (``_merge``): position
embeddings are resampled to the model's grid the way the file's family does
it (``_interp``), token slots kept, added or dropped; ``dont_load`` patterns
keep initial values (e.g. a new head); anything else that does not fit fails
with one line naming the file and what did not match, then every key.
"""

from __future__ import annotations

from pairviz_jax.checkpoints import _io
from pairviz_jax.checkpoints._api import (
    Checkpoint,
    convert_file,
    describe,
    jitted_init,
    load,
    model_from,
    read,
    save,
    sniff,
)
from pairviz_jax.checkpoints._interp import METHODS as INTERPOLATIONS
from pairviz_jax.checkpoints._interp import interpolate_bicubic, resample_posemb
from pairviz_jax.checkpoints._io import CheckpointError, write_npz, write_safetensors
from pairviz_jax.checkpoints._merge import merge
from pairviz_jax.checkpoints.formats import NORMALIZATIONS

__all__ = [
    "INTERPOLATIONS",
    "NORMALIZATIONS",
    "Checkpoint",
    "CheckpointError",
    "convert_file",
    "describe",
    "interpolate_bicubic",
    "load",
    "merge",
    "model_from",
    "read",
    "resample_posemb",
    "save",
    "sniff",
    "write_npz",
    "write_safetensors",
]

_ = (_io, jitted_init)  # reached as checkpoints._io / checkpoints.jitted_init
