"""Figures of the paper from checkpoints, and the authors' heatmap renderer.

* ``paper``: ``paper_overlay`` (the authors' pictures, pixel for pixel) and ``JET``
  (OpenCV's colormap, written out; no OpenCV needed).
* ``images``: ``load_image`` (any Pillow mode to 8-bit RGB).
* ``inputs``: image references (files or ``DATASET:SPLIT:INDEX``) and galleries.
* ``figures``: matplotlib figures from images and maps (``modern`` or ``paper`` style).
* ``commands``: each figure from a model: ``pair``, ``matrix``, ``retrieve``,
  ``class_maps``, ``training``, ``rollout``.
* ``cli``: ``visualize.py``'s figure subcommands (``add_arguments`` + ``run`` each).
* ``demo``: every figure from the embedded demo model, or a demo run trained here.

Models come from ``pairviz_jax.runs`` (``load_run``, ``load_weights``, ``LoadedModel``,
``InputError``; re-exported here).
"""

from pairviz_jax.plotting.commands import (
    class_maps,
    matrix,
    pair,
    rank,
    retrieval_row,
    retrieve,
    rollout,
    training,
)
from pairviz_jax.plotting.figures import STYLES, RetrievalRow, Style, save_figure
from pairviz_jax.plotting.images import load_image, to_rgb
from pairviz_jax.plotting.inputs import Example, Gallery, open_gallery, read_example
from pairviz_jax.plotting.paper import JET, jet_table, minmax, paper_overlay, to_grey
from pairviz_jax.runs import (
    InputError,
    LoadedModel,
    checkpoint_steps,
    load_run,
    load_weights,
    parse_model_options,
)

__all__ = [
    "JET",
    "STYLES",
    "Example",
    "Gallery",
    "InputError",
    "LoadedModel",
    "RetrievalRow",
    "Style",
    "checkpoint_steps",
    "class_maps",
    "jet_table",
    "load_image",
    "load_run",
    "load_weights",
    "matrix",
    "minmax",
    "open_gallery",
    "pair",
    "paper_overlay",
    "parse_model_options",
    "rank",
    "read_example",
    "retrieval_row",
    "retrieve",
    "rollout",
    "save_figure",
    "to_grey",
    "to_rgb",
    "training",
]
