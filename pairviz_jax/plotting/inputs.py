"""Images and galleries for the figures, prepared at a model's input size.

An image reference is a file path, or ``DATASET:SPLIT:INDEX`` for an example of a
``pairviz_jax.data`` dataset (``demo:test:5``; the demo needs no download). A gallery is
a directory of images (labels from the first sub-directory under it; none for files at
its top) or ``DATASET[:SPLIT]`` (split default ``test``). Images are resized to the
model's input size as in evaluation (``preprocess.eval_resize``: the whole image, no
crop), so maps are drawn on what the model saw. An image smaller than one patch of the
model is refused (``runs.check_image_size``, the rule of every command, ``batch`` too).
Gallery images from class folders are named ``<class>/<file stem>`` in figure titles.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pairviz_jax.data import preprocess
from pairviz_jax.plotting.images import load_image
from pairviz_jax.runs import InputError, LoadedModel, one_line

__all__ = ["IMAGE_EXTENSIONS", "Example", "Gallery", "open_gallery", "read_example"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_DATASET_REF = re.compile(
    r"(?P<name>[A-Za-z_]\w*)(?::(?P<split>[A-Za-z_]\w*))?(?::(?P<index>\d+))?"
)


@dataclasses.dataclass
class Example:
    """One image ready for a model.

    Attributes:
      image: uint8 [H, W, 3] at the model's input size.
      label: class label as a string, or None when unknown.
      name: short name for titles.
      key: identity (absolute path or ``dataset:split:index``), to keep a query out of
        its own gallery.
    """

    image: np.ndarray
    label: str | None
    name: str
    key: str


def _dataset_ref(ref: str) -> tuple[str, str, int | None] | None:
    """(name, split, index) if ``ref`` names a registered dataset and is not a file."""
    from pairviz_jax.data import DATASETS

    if os.path.exists(ref):
        return None
    m = _DATASET_REF.fullmatch(ref)
    if not m or m["name"] not in DATASETS:
        return None
    index = None if m["index"] is None else int(m["index"])
    return m["name"], m["split"] or "test", index


def _check_size(image: np.ndarray, model: LoadedModel, where: str) -> None:
    model.check_size(image.shape[0], image.shape[1], where)


def _resize(image: np.ndarray, model: LoadedModel) -> np.ndarray:
    return preprocess.eval_resize(image, image_size=model.image_size)[0]


def _open_source(name: str, split: str, model: LoadedModel, data_dir: str | None):
    from pairviz_jax.data import open_source

    h, w = model.image_size
    try:
        return open_source(name, split, data_dir=data_dir, image_size=h if h == w else None)
    except ValueError as e:
        raise InputError(f"{name}:{split}: {one_line(e)}") from None


def _decode_raw(raw, where: str, model: LoadedModel) -> np.ndarray:
    from pairviz_jax.data.images import CorruptImageError, decode_image

    if raw is None:
        raise InputError(f"{where}: the record cannot be read")
    try:
        image = np.asarray(decode_image(raw["image"], where=where))
    except CorruptImageError as e:
        raise InputError(one_line(e)) from None
    _check_size(image, model, where)
    return _resize(image, model)


def read_example(
    ref: str, model: LoadedModel, *, label: str | None = None, data_dir: str | None = None
) -> Example:
    """Reads one image reference (a file or ``DATASET:SPLIT:INDEX``) for ``model``.

    Args:
      ref: the reference.
      model: sets the input size and the smallest image (one patch).
      label: the class label of a file (dataset examples carry their own).
      data_dir: TFDS data directory of prepared datasets.

    Returns:
      An :class:`Example`.

    Raises:
      InputError: a missing, corrupt or too small image, or a bad dataset index.
    """
    parsed = _dataset_ref(ref)
    if parsed is not None:
        name, split, index = parsed
        if index is None:
            raise InputError(f"{ref}: give an example index, e.g. {name}:{split}:0")
        source = _open_source(name, split, model, data_dir)
        if index >= len(source):
            raise InputError(
                f"{ref}: index {index} is out of range, {name}:{split} has {len(source)}"
            )
        raw = source[index]
        image = _decode_raw(raw, ref, model)
        key = f"{name}:{split}:{index}"
        return Example(image, str(int(raw["label"])), f"{split} image {index}", key)
    image = load_image(ref)
    _check_size(image, model, ref)
    stem = os.path.splitext(os.path.basename(ref))[0]
    return Example(_resize(image, model), label, stem, os.path.abspath(ref))


class Gallery:
    """A set of labelled images at one model's input size, held in memory.

    Attributes:
      spec: what it was opened from.
      examples: the readable images, in a fixed order.
      skipped: ``(where, why)`` of images left out (unreadable or smaller than a patch).
    """

    def __init__(self, spec: str, examples: Sequence[Example], skipped: Sequence[tuple]):
        self.spec = spec
        self.examples = list(examples)
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> list[str | None]:
        return [e.label for e in self.examples]

    def images(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 [n, H, W, 3] of the given (default all) examples."""
        idx = range(len(self)) if indices is None else indices
        return np.stack([self.examples[i].image for i in idx])

    def embed(self, model: LoadedModel, batch_size: int = 64) -> np.ndarray:
        """Embeddings [N, E] (float32) of every example under ``model``.

        Batches are padded to one size (``batch_size``, or the power of two >= N for a
        smaller gallery), so the model compiles once.
        """
        size = min(batch_size, 1 << max(len(self) - 1, 0).bit_length())
        out = []
        for start in range(0, len(self), size):
            chunk = self.images(range(start, min(start + size, len(self))))
            pad = np.repeat(chunk[-1:], size - len(chunk), axis=0)
            out.append(model.embed(np.concatenate([chunk, pad]))[: len(chunk)])
        return np.concatenate(out)


def _warn(where: str, why: str) -> None:
    print(f"warning: skipping {where}: {why}", file=sys.stderr)


def _folder_gallery(root: str, model: LoadedModel, limit: int | None) -> Gallery:
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        files += [
            os.path.join(directory, n)
            for n in sorted(names)
            if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if limit is not None:
        files = files[:limit]
    if not files:
        raise InputError(f"--gallery {root}: no images ({', '.join(IMAGE_EXTENSIONS)})")

    def read(path: str):
        rel = os.path.relpath(path, root).split(os.sep)
        label = rel[0] if len(rel) > 1 else None
        try:
            ex = read_example(path, model, label=label)
        except InputError as e:
            return None, (path, str(e))
        if label is not None:
            ex.name = f"{label}/{ex.name}"  # titles say the class: "chair/3", not "3"
        return ex, None

    examples, skipped = _read_all(read, files)
    if not examples:
        raise InputError(f"--gallery {root}: none of its {len(files)} images can be read")
    return Gallery(root, examples, skipped)


def _read_all(read, items) -> tuple[list, list]:
    """Runs ``read(item) -> (example, None) | (None, (where, why))`` on a thread pool.

    Returns the readable examples in order and the skipped ``(where, why)``, each warned about.
    """
    examples, skipped = [], []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for ex, bad in pool.map(read, items):
            if ex is not None:
                examples.append(ex)
            else:
                skipped.append(bad)
                _warn(*bad)
    return examples, skipped


def _dataset_gallery(
    name: str, split: str, model: LoadedModel, limit: int | None, data_dir: str | None
) -> Gallery:
    source = _open_source(name, split, model, data_dir)
    n = len(source) if limit is None else min(limit, len(source))

    def read(i: int):
        where = f"{name}:{split}:{i}"
        try:
            raw = source[i]
            image = _decode_raw(raw, where, model)
            return Example(image, str(int(raw["label"])), f"{split} image {i}", where), None
        except InputError as e:
            return None, (where, str(e))

    examples, skipped = _read_all(read, range(n))
    if not examples:
        raise InputError(f"--gallery {name}:{split}: no readable examples")
    return Gallery(f"{name}:{split}", examples, skipped)


def open_gallery(
    spec: str, model: LoadedModel, *, limit: int | None = None, data_dir: str | None = None
) -> Gallery:
    """Opens ``--gallery``: a directory of images or ``DATASET[:SPLIT]``.

    Args:
      spec: the directory or dataset reference.
      model: sets the input size.
      limit: read at most this many images (the first in sorted / dataset order).
      data_dir: TFDS data directory of prepared datasets.

    Returns:
      A :class:`Gallery`; unreadable images are skipped with a warning on stderr.

    Raises:
      InputError: neither a directory nor a dataset, or nothing readable in it.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--gallery-size {limit}: must be at least 1")
    if os.path.isdir(spec):
        return _folder_gallery(spec, model, limit)
    parsed = _dataset_ref(spec)
    if parsed is None or parsed[2] is not None:
        from pairviz_jax.data import DATASETS

        raise InputError(
            f"--gallery {spec}: not a directory, nor a dataset as NAME[:SPLIT] with NAME in "
            + ", ".join(sorted(DATASETS))
        )
    name, split, _ = parsed
    return _dataset_gallery(name, split, model, limit, data_dir)
