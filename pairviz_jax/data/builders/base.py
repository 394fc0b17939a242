"""Shared machinery of the manual-download TFDS builders (prepared without TensorFlow).

Each builder reads a user's local copy of a dataset in its published layout (TFDS's
``manual_dir``), checks every image once with PIL (:func:`checked_image_bytes`) and
writes ``array_record`` files that ``tfds.data_source`` and ``grain`` read without
TensorFlow. Corrupt, unreadable or missing images are counted and skipped with a
warning; the counts are saved in the dataset's metadata (``skipped/<split>``).

Every builder stores the same features, so one reader serves them all:

* ``image``: encoded JPEG/PNG of an RGB image (decodes to uint8 [H, W, 3]);
* ``label``: int64 class; the classes of the train split are numbered 0..C-1 first
  (``metadata["num_train_classes"] = C``), so a classifier head over the train split
  needs exactly C outputs; classes seen only in other splits follow;
* ``id``: int64 identifier of the image, unique within its split (the dataset's own
  image id where it has a numeric one);
* ``file_name``: the image's path relative to the manual directory.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import inspect
import logging
import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from pairviz_jax.data.images import CorruptImageError, checked_image_bytes

__all__ = ["ImageRecord", "ManualImageBuilder", "IMAGE_SUFFIXES", "rank_labels"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image of a split before it is read.

    Attributes:
      path: absolute path of the image file.
      label: class index (see the module docstring for the numbering).
      id: int64 identifier, unique within the split.
      file_name: path relative to the manual directory, as stored.
    """

    path: str
    label: int
    id: int
    file_name: str


def rank_labels(train_classes: Iterable, other_classes: Iterable = ()) -> dict:
    """Numbers raw class ids: sorted train classes 0..C-1, then the other classes.

    Args:
      train_classes: raw class ids (hotel ids, landmark ids, names) of the train split.
      other_classes: raw class ids of the other splits.

    Returns:
      dict raw id -> contiguous int label.
    """
    train = sorted(set(train_classes))
    rest = sorted(set(other_classes) - set(train))
    return {c: i for i, c in enumerate([*train, *rest])}


class ManualImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders that read a local copy in its published layout.

    Subclasses set ``name``, ``VERSION``, ``MANUAL_DOWNLOAD_INSTRUCTIONS`` and implement
    :meth:`_split_records`. Prepare one with ``pairviz_jax.data.prepare`` or::

        builder = SomeBuilder(data_dir=...)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=...))
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    DESCRIPTION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the `importlib_resources` backport on Python >= 3.9 for
        # builders outside its package; the builder's file is all it needs to know.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)
        self._records_cache: dict[str, list[ImageRecord]] | None = None
        self.skipped: dict[str, int] = {}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "id": tfds.features.Scalar(dtype=np.int64),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    @abc.abstractmethod
    def _split_records(self, manual_dir: str) -> Mapping[str, list[ImageRecord]]:
        """Lists every split's images from the manual directory.

        Args:
          manual_dir: the user's local copy in the published layout.

        Returns:
          split name -> records, in a deterministic order.

        Raises:
          ValueError: naming the missing file or directory, if the layout is wrong.
        """

    def _records(self, manual_dir: str) -> Mapping[str, list[ImageRecord]]:
        if self._records_cache is None:
            if not os.path.isdir(manual_dir):
                raise ValueError(f"{self.name}: manual_dir {manual_dir!r} is not a directory")
            self._records_cache = dict(self._split_records(os.fspath(manual_dir)))
            for split, records in self._records_cache.items():
                if not records:
                    raise ValueError(
                        f"{self.name}: no images found for split {split!r} under "
                        f"{manual_dir!r}; expected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
                    )
        return self._records_cache

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        records = self._records(manual_dir)
        train = records.get("train", [])
        # Labels of the train split lie in 0..C-1 (C counts a class whose images are all
        # unreadable too, so labels never depend on which files happen to be corrupt).
        self.info.metadata["num_train_classes"] = max((r.label for r in train), default=-1) + 1
        return {split: self._generate_examples(split, manual_dir) for split in records}

    def _generate_examples(self, split: str, manual_dir: str) -> Iterator[tuple[int, dict]]:
        skipped = 0
        for record, data in _read_in_parallel(self._records(manual_dir)[split]):
            if isinstance(data, CorruptImageError):
                skipped += 1
                logger.warning("%s/%s: skipping image %d: %s", self.name, split, skipped, data)
                continue
            yield (
                record.id,
                {
                    "image": data,
                    "label": record.label,
                    "id": record.id,
                    "file_name": record.file_name,
                },
            )
        self.skipped[split] = skipped
        self.info.metadata[f"skipped/{split}"] = skipped
        if skipped:
            logger.warning("%s/%s: skipped %d unreadable images", self.name, split, skipped)


def _read_or_error(record: ImageRecord) -> bytes | CorruptImageError:
    try:
        return checked_image_bytes(record.path)
    except CorruptImageError as e:
        return e


def _read_in_parallel(
    records: list[ImageRecord], chunk: int = 256
) -> Iterator[tuple[ImageRecord, bytes | CorruptImageError]]:
    """Checks images on a thread pool (PIL decodes without the GIL), in record order."""
    workers = min(16, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            yield from zip(part, pool.map(_read_or_error, part), strict=True)


def find_file(manual_dir: str, file_name: str, subdirs: Iterable[str] = ("",)) -> str:
    """Finds a metadata file in the first of ``subdirs`` of ``manual_dir`` holding it.

    Raises:
      ValueError: naming every place looked in, if there is none.
    """
    tried = []
    for sub in subdirs:
        path = os.path.join(manual_dir, sub, file_name)
        if os.path.isfile(path):
            return path
        tried.append(path)
    raise ValueError(f"{file_name} not found; looked for: {', '.join(tried)}")


def walk_images(root: str) -> list[str]:
    """Every image file under ``root`` (by suffix), sorted, skipping ``masks`` folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "masks")
        found.extend(
            os.path.join(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_SUFFIXES)
        )
    return sorted(found)
