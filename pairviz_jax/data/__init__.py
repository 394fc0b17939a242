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

from pairviz_jax.data import demo, photos, preprocess
from pairviz_jax.data.pipeline import EvalPreprocess, TrainPreprocess, make_dataset
from pairviz_jax.data.preprocess import NORMALIZATION, eval_resize, normalize, train_augment
from pairviz_jax.data.sources import DATASETS, num_train_classes, open_source, skipped_counts

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
