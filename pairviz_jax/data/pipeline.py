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

Order and sharding. In training every process computes the same order: global batches of
``batch_size * shard_count`` records, each epoch a permutation of the whole split drawn
from ``seed`` and the epoch (:class:`GlobalOrder`, the last partial global batch of an
epoch dropped, so a global batch never holds a record twice), and process p takes the
p-th consecutive ``batch_size`` slots of each global batch. Each slot's crop/flip
randomness is drawn from ``seed`` and the slot's global position (so it differs between
processes and slots), so the stream of global batches is a pure function of
(dataset, split, seed, global batch size) whatever the number of processes or
``num_threads``, and ``start_batch`` resumes it at any global step. In evaluation the
split is sharded by process (process p reads records p, p + P, p + 2P, ...) and every
process yields the same number of full batches, ``ceil(ceil(N / P) / B)``.

Resuming: training restarts at a global batch (``start_batch``, derived from the step), so
it needs no iterator state and survives a change of process count; iterators also have
grain's ``get_state``/``set_state`` (a small JSON-able dict).

Unreadable images are counted (``sources.skipped_counts()``), logged with a warning
and replaced by a record of another global batch of the same epoch (training: the global
layout must not shift), skipped (unbatched evaluation) or turned into invalid slots
(evaluation batches); they never stop a run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from pairviz_jax.data import preprocess, sources
from pairviz_jax.data.images import CorruptImageError, decode_image

__all__ = ["EvalPreprocess", "GlobalOrder", "TrainPreprocess", "make_dataset"]


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


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([int(seed), 0x5EED, int(epoch)]).permutation(n)


@dataclasses.dataclass(frozen=True)
class GlobalOrder:
    """Which record fills each slot of the global training batches, the same on every process.

    Epoch ``e`` is the permutation of the ``n`` records drawn from ``(seed, e)``, cut into
    ``n // global_batch`` global batches (the remainder is left out of that epoch, so no
    global batch holds a record twice). Process ``p`` of ``P`` reads slots
    ``[p * b, (p + 1) * b)`` of every global batch, ``b = global_batch / P``.

    Attributes:
      n: records in the split.
      global_batch: records per global batch, over all processes.
      seed: the shuffling seed shared by all processes.
    """

    n: int
    global_batch: int
    seed: int

    def __post_init__(self):
        if self.n < self.global_batch:
            raise ValueError(
                f"the split has {self.n} records, fewer than one global batch of "
                f"{self.global_batch}"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def position(self, batch: int, slot: int) -> int:
        """The global position of slot ``slot`` of global batch ``batch`` (unique, >= 0)."""
        return int(batch) * self.global_batch + int(slot)

    def record(self, position: int) -> int:
        """The record index at a global position."""
        batch, slot = divmod(int(position), self.global_batch)
        epoch, k = divmod(batch, self.batches_per_epoch)
        return int(_epoch_permutation(self.seed, epoch, self.n)[k * self.global_batch + slot])

    def local_position(self, t: int, *, shard_index: int, shard_count: int) -> int:
        """The global position of the ``t``-th element read by process ``shard_index``."""
        b = self.global_batch // shard_count
        batch, i = divmod(int(t), b)
        return self.position(batch, shard_index * b + i)

    def fallbacks(self, position: int):
        """Positions standing in for an unreadable record: the same slot of the next global
        batches of the epoch (cyclically), never the same global batch."""
        batch, slot = divmod(int(position), self.global_batch)
        epoch, k = divmod(batch, self.batches_per_epoch)
        first = epoch * self.batches_per_epoch
        for j in range(1, self.batches_per_epoch):
            yield self.position(first + (k + j) % self.batches_per_epoch, slot)


class _TrainElements:
    """Local element ``t`` of a process -> its preprocessed example (a grain map on ints).

    The crop/flip generator is seeded by ``(seed, global position)``; an unreadable record
    is counted and replaced by :meth:`GlobalOrder.fallbacks`.
    """

    def __init__(self, source, order: GlobalOrder, preprocess_fn, shard_index, shard_count):
        self.source, self.order, self.fn = source, order, preprocess_fn
        self.shard_index, self.shard_count = shard_index, shard_count

    def _example(self, position: int):
        raw = self.source[self.order.record(position)]
        if raw is None:
            return None
        rng = np.random.default_rng([self.order.seed, 0xA06, position])
        return self.fn(raw, rng)

    def __call__(self, t) -> dict[str, Any]:
        position = self.order.local_position(
            int(t), shard_index=self.shard_index, shard_count=self.shard_count
        )
        example = self._example(position)
        if example is not None:
            return example
        for other in self.order.fallbacks(position):
            example = self._example(other)
            if example is not None:
                return example
        raise ValueError(f"{self.fn.name}/{self.fn.split}: no readable record in the epoch")


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


def _train_elements(
    source, augment, batch_size, shard_index, shard_count, seed, num_epochs, start_batch
) -> grain.MapDataset:
    """Training: this shard's examples of the global shuffled order, augmented, from global
    batch ``start_batch`` on (forever, or ``num_epochs`` passes)."""
    local = 1 if batch_size is None else int(batch_size)
    order = GlobalOrder(len(source), local * shard_count, int(seed))
    stop = None if num_epochs is None else num_epochs * order.batches_per_epoch * local
    elements = _TrainElements(source, order, augment, shard_index, shard_count)
    return grain.MapDataset.range(int(start_batch) * local, stop or 2**62).map(elements)


def _eval_elements(
    source, common, batch_size, shard_index, shard_count, num_epochs
) -> grain.MapDataset:
    """Evaluation: this shard's examples in file order, resized; with a ``batch_size``, padded
    to whole batches (``valid=False``)."""
    padded_eval = batch_size is not None
    length = math.ceil(len(source) / shard_count)
    if padded_eval:
        length = math.ceil(length / batch_size) * batch_size
    ds = grain.MapDataset.source(_Shard(source, shard_index, shard_count, length))
    if num_epochs not in (None, 1):
        ds = ds.repeat(num_epochs)
    return ds.map(EvalPreprocess(**common, keep_invalid=padded_eval))


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
    start_batch: int = 0,
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
      batch_size: examples per batch for this process; None yields single examples (in
        training: global batches of ``shard_count`` examples, one per process).
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
      start_batch: training only: the first global batch to yield (the training step when
        resuming), whatever process count wrote the earlier ones.

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

    common = dict(
        name=name, split=split, image_size=size, has_mask=spec.has_mask, normalize=normalize
    )
    if train:
        augment = TrainPreprocess(
            **common, scale=tuple(crop_scale), ratio=tuple(crop_ratio), flip=flip
        )
        ds = _train_elements(
            source, augment, batch_size, shard_index, shard_count, seed, num_epochs, start_batch
        )
    else:
        ds = _eval_elements(source, common, batch_size, shard_index, shard_count, num_epochs)
    return _read(ds.filter(_not_none), num_threads, prefetch, batch_size, train)


def _read(ds, num_threads, prefetch, batch_size, train: bool) -> grain.IterDataset:
    """``ds`` read by ``num_threads`` threads (default the CPUs, at most 16), batched if asked
    (training drops the last partial batch)."""
    threads = min(16, os.cpu_count() or 1) if num_threads is None else int(num_threads)
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=max(threads, 1), prefetch_buffer_size=max(prefetch, 1))
    )
    if batch_size is not None:
        it_ds = it_ds.batch(batch_size, drop_remainder=train)
    return it_ds
