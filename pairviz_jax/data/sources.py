"""Dataset names -> random-access sources of raw examples, read without TensorFlow.

A source has ``__len__`` and ``__getitem__`` (grain's ``RandomAccessDataSource``
protocol). The sources here return *raw* examples in one schema for every dataset::

    {"image": bytes (encoded) or uint8 [H, W, 3], "label": int32, "id": int64}
    # plus "mask": bool [H, W] for datasets with object masks (the demo)

or ``None`` where a record cannot be read: such records are counted (per dataset and
split, :func:`skipped_counts`) and logged with a warning, and the pipeline skips them.

=================  =================================  =====================================
name               reads                              notes
=================  =================================  =====================================
``demo``           drawn on demand (``data.demo``)    nothing to prepare; object masks
``sop``            ``pairviz_sop`` (array_record)     ``prepare sop``
``hotels50k``      ``pairviz_hotels50k``              ``prepare hotels50k``
``gldv2_clean``    ``pairviz_gldv2_clean``            ``prepare gldv2_clean``
``image_folder``   ``pairviz_image_folder``           ``prepare image_folder``
``tfds_sop``       TFDS's ``stanford_online_products``  prepared by TFDS (needs TF to
                                                      prepare, not to read); ``id`` is
                                                      the record index
=================  =================================  =====================================
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any

import numpy as np

from pairviz_jax.data import demo

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "num_train_classes",
    "open_source",
    "record_skip",
    "skipped_counts",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset.

    Attributes:
      name: the registry name (also the key of ``preprocess.NORMALIZATION``).
      tfds_name: TFDS builder name, or None for the generated demo.
      label_key: feature holding the class.
      id_key: feature holding the image id, or None to use the record index.
      skip_decoding: read encoded bytes and decode in the pipeline (fast, DCT-scaled
        JPEG decoding); False lets TFDS decode (needed under ``tfds.testing.mock_data``).
      has_mask: examples carry an object ``mask``.
      default_image_size: the image size when the caller gives none.
      num_train_classes: classes of the train split when fixed, else read from the
        prepared dataset's metadata.
    """

    name: str
    tfds_name: str | None
    label_key: str = "label"
    id_key: str | None = "id"
    skip_decoding: bool = True
    has_mask: bool = False
    default_image_size: int = 256
    num_train_classes: int | None = None


DATASETS: dict[str, DatasetSpec] = {
    "demo": DatasetSpec(
        "demo",
        None,
        has_mask=True,
        default_image_size=64,
        num_train_classes=len(demo.TRAIN_GLYPHS),
    ),
    "sop": DatasetSpec("sop", "pairviz_sop"),
    "hotels50k": DatasetSpec("hotels50k", "pairviz_hotels50k"),
    "gldv2_clean": DatasetSpec("gldv2_clean", "pairviz_gldv2_clean"),
    "image_folder": DatasetSpec("image_folder", "pairviz_image_folder"),
    "tfds_sop": DatasetSpec(
        "tfds_sop",
        "stanford_online_products",
        label_key="class_id",
        id_key=None,
        skip_decoding=False,
        num_train_classes=11318,
    ),
}

_SKIPPED: collections.Counter = collections.Counter()
_SKIPPED_LOCK = threading.Lock()


def record_skip(name: str, split: str, where: str, error: BaseException) -> None:
    """Counts an unreadable record of ``name``/``split`` and logs a warning."""
    with _SKIPPED_LOCK:
        _SKIPPED[(name, split)] += 1
        n = _SKIPPED[(name, split)]
    logger.warning("%s/%s: skipping unreadable %s (%d so far): %s", name, split, where, n, error)


def skipped_counts() -> dict[tuple[str, str], int]:
    """(name, split) -> records skipped so far in this process (reading and decoding)."""
    with _SKIPPED_LOCK:
        return dict(_SKIPPED)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; raises a ValueError listing the known names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def _tfds_builder(spec: DatasetSpec, data_dir: str | None):
    import tensorflow_datasets as tfds

    import pairviz_jax.data.builders  # noqa: F401  (registers the project's builders)

    return tfds.builder(spec.tfds_name, data_dir=data_dir)


def _prepare_hint(spec: DatasetSpec) -> str:
    if spec.name == "tfds_sop":
        return "prepare it with TFDS (`tfds build stanford_online_products`, needs TensorFlow)"
    return f"prepare it with `python -m pairviz_jax.data.prepare {spec.name} --manual_dir DIR`"


class TfdsSource:
    """A TFDS ``array_record`` data source mapped to the common raw schema.

    Args:
      spec: the dataset's spec.
      split: split name (TFDS slicing such as ``"train[:10%]"`` works).
      data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
    """

    def __init__(self, spec: DatasetSpec, split: str, data_dir: str | None = None):
        import tensorflow_datasets as tfds

        import pairviz_jax.data.builders  # noqa: F401  (registers the project's builders)

        self.spec, self.split = spec, split
        decoders = {"image": tfds.decode.SkipDecoding()} if spec.skip_decoding else None
        try:
            self._source = tfds.data_source(
                spec.tfds_name,
                split=split,
                data_dir=data_dir,
                download=False,
                decoders=decoders,
            )
        except Exception as e:  # TFDS raises AssertionError/FileNotFoundError/ValueError
            raise ValueError(
                f"cannot read {spec.tfds_name!r} split {split!r} from data_dir={data_dir!r} "
                f"({type(e).__name__}: {e}); {_prepare_hint(spec)}"
            ) from e

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = int(index)
        try:
            raw = self._source[index]
            example = {
                "image": raw["image"],
                "label": np.int32(raw[self.spec.label_key]),
                "id": np.int64(index if self.spec.id_key is None else raw[self.spec.id_key]),
            }
        except Exception as e:  # a corrupt record or image must not stop a run
            record_skip(self.spec.name, self.split, f"record {index}", e)
            return None
        return example

    def __repr__(self) -> str:
        return f"TfdsSource({self.spec.tfds_name!r}, split={self.split!r})"


def open_source(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    demo_seed: int = 0,
    demo_examples_per_class: int | None = None,
):
    """Opens the raw random-access source of a dataset split.

    Args:
      name: a key of :data:`DATASETS`.
      split: split name (``"train"``, ``"test"``, ...).
      data_dir: TFDS data directory of the prepared datasets (unused by ``demo``).
      image_size: the demo's drawing size (default 64); unused by the others.
      demo_seed: the demo's content seed (independent of shuffling seeds).
      demo_examples_per_class: the demo's size (default 128 train, 32 test).

    Returns:
      A source of raw examples (see the module docstring).

    Raises:
      ValueError: for an unknown name or split, or a dataset that is not prepared.
    """
    spec = get_spec(name)
    if spec.tfds_name is None:
        return demo.DemoSource(
            split,
            image_size=spec.default_image_size if image_size is None else int(image_size),
            seed=demo_seed,
            examples_per_class=demo_examples_per_class,
        )
    return TfdsSource(spec, split, data_dir)


def num_train_classes(name: str, *, data_dir: str | None = None) -> int:
    """Classes of the train split (labels 0..C-1), e.g. for a classifier or proxy head."""
    spec = get_spec(name)
    if spec.num_train_classes is not None:
        return spec.num_train_classes
    builder = _tfds_builder(spec, data_dir)
    try:
        return int(builder.info.metadata["num_train_classes"])
    except Exception as e:
        raise ValueError(
            f"{spec.tfds_name} in data_dir={data_dir!r} has no num_train_classes metadata; "
            f"{_prepare_hint(spec)}"
        ) from e
