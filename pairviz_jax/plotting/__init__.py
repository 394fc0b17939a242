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

from pairviz_jax._lazy import lazy_attributes

# name -> its module, imported on first use: ``visualize.py --help`` imports no JAX.
_WHERE = {
    "class_maps": "pairviz_jax.plotting.commands",
    "matrix": "pairviz_jax.plotting.commands",
    "pair": "pairviz_jax.plotting.commands",
    "rank": "pairviz_jax.plotting.commands",
    "retrieval_row": "pairviz_jax.plotting.commands",
    "retrieve": "pairviz_jax.plotting.commands",
    "rollout": "pairviz_jax.plotting.commands",
    "training": "pairviz_jax.plotting.commands",
    "STYLES": "pairviz_jax.plotting.figures",
    "RetrievalRow": "pairviz_jax.plotting.figures",
    "Style": "pairviz_jax.plotting.figures",
    "save_figure": "pairviz_jax.plotting.figures",
    "load_image": "pairviz_jax.plotting.images",
    "to_rgb": "pairviz_jax.plotting.images",
    "Example": "pairviz_jax.plotting.inputs",
    "Gallery": "pairviz_jax.plotting.inputs",
    "open_gallery": "pairviz_jax.plotting.inputs",
    "read_example": "pairviz_jax.plotting.inputs",
    "JET": "pairviz_jax.plotting.paper",
    "jet_table": "pairviz_jax.plotting.paper",
    "minmax": "pairviz_jax.plotting.paper",
    "paper_overlay": "pairviz_jax.plotting.paper",
    "to_grey": "pairviz_jax.plotting.paper",
    "InputError": "pairviz_jax.runs",
    "LoadedModel": "pairviz_jax.runs",
    "checkpoint_steps": "pairviz_jax.runs",
    "load_run": "pairviz_jax.runs",
    "load_weights": "pairviz_jax.runs",
    "parse_model_options": "pairviz_jax.runs",
}

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


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, __all__)
