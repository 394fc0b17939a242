"""Data: TFDS builders prepared and read without TensorFlow, grain pipelines, the demo.

* ``make_dataset(name, split, ...)`` (``data.pipeline``): the one input pipeline of
  training, evaluation and visualisation; a ``grain.IterDataset`` of examples or batches.
* ``demo`` (``data.demo``): generated glyphs on clutter with object masks; no download.
* ``photos`` (``data.photos``): the photographs scikit-image, scikit-learn and matplotlib
  ship, and copy-paste pairs of them with masks; no download.
* ``builders``: TFDS builders for SOP, Hotels-50k, GLDv2-clean and class folders,
  prepared with ``python -m pairviz_jax.data.prepare NAME --manual_dir DIR``.
* ``preprocess``: ``train_augment``, ``eval_resize``, ``normalize``, ``NORMALIZATION``.

Example keys, fixed for the project:

=========  ==================  ====================================================
key        value               meaning
=========  ==================  ====================================================
image      uint8 [H, W, 3]     the image (float32 normalised with ``normalize=True``)
label      int32               class (train classes are 0..C-1)
id         int64               image id, unique within the split
mask       bool [H, W]         the **object** mask (demo only)
valid      bool                the **padding** flag of evaluation batches
=========  ==================  ====================================================
"""

from pairviz_jax._lazy import lazy_attributes

# name -> its module, imported on first use: a process that reads images (a batch worker, a
# command on image files) imports neither grain (the pipeline) nor the demo's fonts.
_WHERE = {
    "EvalPreprocess": "pairviz_jax.data.pipeline",
    "TrainPreprocess": "pairviz_jax.data.pipeline",
    "make_dataset": "pairviz_jax.data.pipeline",
    "NORMALIZATION": "pairviz_jax.data.preprocess",
    "eval_resize": "pairviz_jax.data.preprocess",
    "normalize": "pairviz_jax.data.preprocess",
    "train_augment": "pairviz_jax.data.preprocess",
    "DATASETS": "pairviz_jax.data.sources",
    "num_train_classes": "pairviz_jax.data.sources",
    "open_source": "pairviz_jax.data.sources",
    "skipped_counts": "pairviz_jax.data.sources",
}

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "EvalPreprocess",
    "TrainPreprocess",
    "demo",
    "eval_resize",
    "make_dataset",
    "normalize",
    "num_train_classes",
    "open_source",
    "photos",
    "preprocess",
    "skipped_counts",
    "train_augment",
]

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, __all__)
