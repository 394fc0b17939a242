"""Reading the images of a batch job by key, resized and normalised for the model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pairviz_jax.data import preprocess
from pairviz_jax.data.images import CorruptImageError, decode_image

__all__ = ["ImageLoader"]


class ImageLoader:
    """Reads one image by key and returns the model's input.

    A key is ``DATASET:SPLIT:INDEX`` (a record of a ``pairviz_jax.data``
    dataset, e.g. ``demo:test:12``; for the demo the index is the ``id``), a
    bare record index of ``dataset``/``split`` when those are given, or a file
    path (relative ones resolved against ``root``).

    Args:
      image_size: (height, width) the images are resized to (no crop, as the authors).
      normalization: a key of ``pairviz_jax.data.NORMALIZATION``, a ``(mean, std)``
        pair (per channel, of [0, 1] images), or None (only scaled to [0, 1]).
      dataset: the dataset of bare indices, or None.
      split: its split.
      data_dir: TFDS data directory of prepared datasets.
      root: directory that relative paths are resolved against.
      demo_examples_per_class: size of the demo dataset (None: its default).
      patch_size: the smallest image taken, (height, width): the model's patch, as every
        other command (``runs.check_image_size``); smaller images are unreadable.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        normalization: str | tuple[Sequence[float], Sequence[float]] | None,
        *,
        dataset: str | None = None,
        split: str = "test",
        data_dir: str | None = None,
        root: str | None = None,
        demo_examples_per_class: int | None = None,
        patch_size: Sequence[int] = (1, 1),
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(int(s) for s in image_size)
        if isinstance(normalization, str):
            if normalization not in preprocess.NORMALIZATION:
                raise ValueError(
                    f"unknown normalization {normalization!r}; "
                    f"known: {sorted(preprocess.NORMALIZATION)}"
                )
            normalization = preprocess.NORMALIZATION[normalization]
        if normalization is None or normalization[0] is None:
            self.mean = self.std = None
        else:
            self.mean = tuple(float(v) for v in normalization[0])
            self.std = tuple(float(v) for v in normalization[1])
        self.dataset, self.split, self.data_dir, self.root = dataset, split, data_dir, root
        self.demo_examples_per_class = demo_examples_per_class
        self.patch_size = tuple(int(p) for p in patch_size)
        self._sources: dict[tuple[str, str], Any] = {}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "mean": self.mean,
            "std": self.std,
            "dataset": self.dataset,
            "split": self.split if self.dataset else None,
            "root": self.root,
            "demo_examples_per_class": self.demo_examples_per_class,
            "patch_size": list(self.patch_size),
        }

    def _source(self, name: str, split: str):
        if (name, split) not in self._sources:
            from pairviz_jax.data import sources

            h, w = self.image_size
            try:
                self._sources[name, split] = sources.open_source(
                    name,
                    split,
                    data_dir=self.data_dir,
                    image_size=h if h == w else None,
                    demo_examples_per_class=self.demo_examples_per_class,
                )
            except ValueError as e:
                raise CorruptImageError(f"{name}:{split}: {e}") from e
        return self._sources[name, split]

    def _parse(self, key: str) -> tuple[str, str, int] | None:
        parts = key.split(":")
        if len(parts) == 3 and parts[2].isdigit():
            from pairviz_jax.data import sources

            if parts[0] in sources.DATASETS:
                return parts[0], parts[1], int(parts[2])
        if self.dataset is not None and key.isdigit():
            return self.dataset, self.split, int(key)
        return None

    def _check_size(self, image, where: str) -> None:
        from pairviz_jax.runs.model import InputError, check_image_size

        try:
            check_image_size(image.height, image.width, self.patch_size, where)
        except InputError as e:
            raise CorruptImageError(str(e)) from None

    def _how(self, key: str) -> str:
        """How a path key was resolved (for the message of a missing image)."""
        if os.path.isabs(key):
            return ""
        where = os.path.abspath(self.root) if self.root is not None else os.getcwd()
        return (
            f"; the key {key!r} is relative, resolved against {where} (--root; by default "
            "the folder of the pairs or images file)"
        )

    def uint8(self, key: str) -> np.ndarray:
        """The resized image, uint8 [H, W, 3].

        Raises:
          CorruptImageError: if the image is missing or cannot be decoded.
        """
        parsed = self._parse(key)
        if parsed is None:
            path = key if self.root is None else os.path.join(self.root, key)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise CorruptImageError(
                    f"{path}: cannot read ({e.strerror or e}){self._how(key)}"
                ) from e
            image = decode_image(data, min_size=self.image_size, where=path)
            self._check_size(image, path)
        else:
            name, split, index = parsed
            source = self._source(name, split)
            if not 0 <= index < len(source):
                raise CorruptImageError(f"{name}:{split} has no record {index} ({len(source)})")
            raw = source[index]
            if raw is None:
                raise CorruptImageError(f"{name}:{split}:{index} is unreadable")
            image = decode_image(raw["image"], min_size=self.image_size, where=key)
            self._check_size(image, key)
        out, _ = preprocess.eval_resize(image, image_size=self.image_size)
        return out

    def __call__(self, key: str) -> np.ndarray:
        """The normalised model input, float32 [H, W, 3]."""
        x = self.uint8(key)
        return preprocess.model_input(x, self.mean, self.std)
