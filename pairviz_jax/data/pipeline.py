"""The input pipeline shared by training, the evaluators and visualisation.

:func:`make_dataset` turns a dataset name and split into a ``grain.IterDataset``.

Example keys (names fixed for the whole project):

* ``"image"``: uint8 [H, W, 3] (float32 normalised with ``normalize=True``);
* ``"label"``: int32 class;
* ``"id"``: int64 image id (unique within the split);
* ``"mask"``: bool [H, W], the **object** mask; only datasets that have one (the demo);
* ``"valid"``: bool, the **padding** flag; only in evaluation batches
  (``train=False, batch_size=B``): False marks the padding that fills the last batch
  (and the slot of an unreadable image), whose image is zeros, label -1 and id -1.

Batches stack these with a leading axis [B, ...].

Order and sharding: the split is sharded by process first (``shard_index`` /
``shard_count``, default ``jax.process_index()`` / ``jax.process_count()``; process p
reads records p, p + P, p + 2P, ...), then, in training, shuffled per epoch with
``seed`` and augmented with random numbers derived from ``seed`` and the element's
position, so the stream is a pure function of (dataset, split, seed, shard) whatever
``num_threads``. In evaluation every process yields the same number of full batches,
``ceil(ceil(N / P) / B)``.

Resuming: ``it = iter(ds)``; ``state = it.get_state()`` is a small JSON-able dict
(save it with the training checkpoint); a new ``iter(ds)`` followed by
``it.set_state(state)`` continues exactly where the first stopped.

Unreadable images are counted (``sources.skipped_counts()``), logged with a warning
and skipped (train, unbatched evaluation) or turned into invalid slots (evaluation
batches); they never stop a run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from pairviz_jax.data import preprocess, sources
from pairviz_jax.data.images import CorruptImageError, decode_image

__all__ = ["EvalPreprocess", "TrainPreprocess", "make_dataset"]


class _Missing:
    """Stands for a padding slot or an unreadable record (grain treats ``None`` as filtered)."""

    def __repr__(self) -> str:
        return "<missing>"


def _is_missing(raw) -> bool:
    return raw is None or isinstance(raw, _Missing)


class _Shard:
    """Records ``index, index + count, ...`` of a source, padded to ``length``.

    Padding slots and records the source could not read are :class:`_Missing`.
    """

    def __init__(self, source, index: int, count: int, length: int):
        self.source, self.index, self.count, self.length = source, index, count, length
        self.available = len(range(index, len(source), count))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        i = int(i)
        if i >= self.available:
            return _Missing()
        raw = self.source[self.index + i * self.count]
        return _Missing() if raw is None else raw

    def __repr__(self) -> str:
        return f"_Shard({self.source!r}, {self.index}/{self.count}, length={self.length})"


@dataclasses.dataclass(frozen=True)
class _Common:
    name: str
    split: str
    image_size: tuple[int, int]
    has_mask: bool
    normalize: bool

    def _finish(self, image: np.ndarray, mask: np.ndarray | None, raw: dict) -> dict[str, Any]:
        out = {"image": image, "label": np.int32(raw["label"]), "id": np.int64(raw["id"])}
        if self.normalize:
            out["image"] = preprocess.normalize(image, self.name)
        if self.has_mask:
            out["mask"] = mask
        return out

    def _decode(self, raw: dict, min_size: tuple[int, int]):
        return decode_image(raw["image"], min_size=min_size, where=f"id {raw['id']}")


@dataclasses.dataclass(frozen=True)
class TrainPreprocess(_Common):
    """Decodes a raw example and applies :func:`preprocess.train_augment` (grain RandomMap).

    Unreadable images (and missing records) give ``None``, which the pipeline filters.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def __call__(self, raw: dict | _Missing, rng: np.random.Generator) -> dict[str, Any] | None:
        if _is_missing(raw):
            return None
        h, w = self.image_size
        try:
            # Decode at no less than twice the output size, so crops keep their detail.
            image = self._decode(raw, (2 * h, 2 * w))
        except CorruptImageError as e:
            sources.record_skip(self.name, self.split, f"image of id {raw['id']}", e)
            return None
        image, mask = preprocess.train_augment(
            image,
            rng,
            image_size=self.image_size,
            scale=self.scale,
            ratio=self.ratio,
            flip=self.flip,
            mask=raw.get("mask"),
        )
        return self._finish(image, mask, raw)


@dataclasses.dataclass(frozen=True)
class EvalPreprocess(_Common):
    """Decodes a raw example and applies :func:`preprocess.eval_resize` (grain MapTransform).

    With ``keep_invalid`` (evaluation batches), padding and unreadable images become
    zero examples with ``valid=False``; otherwise they give ``None`` and are filtered.
    """

    keep_invalid: bool = False

    def _invalid(self) -> dict[str, Any] | None:
        if not self.keep_invalid:
            return None
        h, w = self.image_size
        image = np.zeros((h, w, 3), np.float32 if self.normalize else np.uint8)
        out = {"image": image, "label": np.int32(-1), "id": np.int64(-1)}
        if self.has_mask:
            out["mask"] = np.zeros((h, w), bool)
        out["valid"] = np.bool_(False)
        return out

    def __call__(self, raw: dict | _Missing) -> dict[str, Any] | None:
        if _is_missing(raw):
            return self._invalid()
        try:
            image = self._decode(raw, self.image_size)
        except CorruptImageError as e:
            sources.record_skip(self.name, self.split, f"image of id {raw['id']}", e)
            return self._invalid()
        image, mask = preprocess.eval_resize(
            image, image_size=self.image_size, mask=raw.get("mask")
        )
        out = self._finish(image, mask, raw)
        if self.keep_invalid:
            out["valid"] = np.bool_(True)
        return out


def _not_none(x) -> bool:
    return x is not None


def _shard_args(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(
            f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
            f"shard_count={shard_count}"
        )
    return int(shard_index), int(shard_count)


def make_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_size: int | Sequence[int] | None = None,
    train: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = None,
    normalize: bool = False,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    num_threads: int | None = None,
    prefetch: int = 128,
    demo_seed: int = 0,
    demo_examples_per_class: int | None = None,
    source=None,
) -> grain.IterDataset:
    """A grain dataset of preprocessed examples or batches (keys: module docstring).

    Args:
      name: dataset name, a key of ``sources.DATASETS`` (``demo``, ``sop``, ``hotels50k``,
        ``gldv2_clean``, ``image_folder``, ``tfds_sop``).
      split: split name, e.g. ``"train"`` or ``"test"``.
      data_dir: TFDS data directory holding the prepared dataset (unused by ``demo``).
      image_size: output size, an int or (height, width); default 256 (the paper), 64
        for the demo.
      train: True for training (shuffle, repeat, random-resized-crop + flip, drop the
        last partial batch); False for evaluation (file order, one pass, resize without
        crop, last batch padded with ``valid=False``).
      seed: shuffling and augmentation seed.
      batch_size: examples per batch for this process; None yields single examples.
      shard_index: this process's shard (default ``jax.process_index()``).
      shard_count: number of shards (default ``jax.process_count()``).
      num_epochs: passes over the data; default forever in training, 1 in evaluation.
      normalize: yield float32 images normalised with the dataset's mean/std
        (``preprocess.NORMALIZATION``) instead of uint8.
      crop_scale: area range of the training crop.
      crop_ratio: aspect-ratio range of the training crop.
      flip: random horizontal flips in training.
      num_threads: threads decoding in parallel (default: the number of CPUs, at most 16).
      prefetch: elements read ahead by those threads.
      demo_seed: content seed of the demo dataset.
      demo_examples_per_class: size of the demo dataset (default 128 train / 32 test).
      source: a ready random-access source of raw examples (``sources`` schema) to use
        instead of opening ``name``/``split``; ``name`` still selects normalisation.

    Returns:
      A ``grain.IterDataset``; ``iter()`` it, and use the iterator's ``get_state`` /
      ``set_state`` to resume.

    Raises:
      ValueError: for unknown names, bad sizes or shards, or an unprepared dataset.
    """
    spec = sources.get_spec(name)
    size = preprocess._size(spec.default_image_size if image_size is None else image_size)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive or None, got {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
    shard_index, shard_count = _shard_args(shard_index, shard_count)
    if source is None:
        source = sources.open_source(
            name,
            split,
            data_dir=data_dir,
            image_size=size[0] if size[0] == size[1] else None,
            demo_seed=demo_seed,
            demo_examples_per_class=demo_examples_per_class,
        )
    n = len(source)
    if n == 0:
        raise ValueError(f"{name}/{split} is empty")

    padded_eval = not train and batch_size is not None
    if train:
        length = n // shard_count
        if length == 0:
            raise ValueError(f"{name}/{split} has {n} examples, fewer than {shard_count} shards")
    else:
        length = math.ceil(n / shard_count)
        if padded_eval:
            length = math.ceil(length / batch_size) * batch_size
    ds = grain.MapDataset.source(_Shard(source, shard_index, shard_count, length))
    common = dict(
        name=name, split=split, image_size=size, has_mask=spec.has_mask, normalize=normalize
    )
    if train:
        ds = ds.shuffle(seed=seed)
        ds = ds.repeat(num_epochs)
        ds = ds.random_map(
            TrainPreprocess(**common, scale=tuple(crop_scale), ratio=tuple(crop_ratio), flip=flip),
            seed=seed,
        )
    else:
        if num_epochs not in (None, 1):
            ds = ds.repeat(num_epochs)
        ds = ds.map(EvalPreprocess(**common, keep_invalid=padded_eval))
    ds = ds.filter(_not_none)
    threads = min(16, os.cpu_count() or 1) if num_threads is None else int(num_threads)
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=max(threads, 1), prefetch_buffer_size=max(prefetch, 1))
    )
    if batch_size is not None:
        it_ds = it_ds.batch(batch_size, drop_remainder=train)
    return it_ds
