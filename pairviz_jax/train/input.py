"""The one module that connects training to the input pipeline (``pairviz_jax.data``).

Training needs two things from a dataset named in ``config.input``:

* :func:`train_iterator`: an endless iterator of this process's share of each global batch,
  ``{"image": [b, H, W, 3], "label": [b]}``, starting at any step (resuming needs no
  iterator state, so the process count may change between runs);
* :func:`eval_batches`: this process's share of the evaluation split in batches padded with a
  boolean ``valid`` [b]; every process yields the same number of batches (multi-host
  collectives need it).

``config.input.name == "synthetic"`` is a small in-memory dataset defined here, for tests and
smoke runs: each class is a random smooth colour pattern, each image that pattern plus noise
(already float and normalised); its evaluation classes are not its training classes, as in
the paper's retrieval benchmarks. Every other name goes to ``pairviz_jax.data``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- synthetic


def _synthetic_example(
    index: int, *, split: str, cfg: ml_collections.ConfigDict, image_size: int
) -> dict[str, Any]:
    num_train = int(cfg.num_train_classes)
    num_classes = num_train if split == "train" else int(cfg.num_test_classes)
    label = index % num_classes
    cls = label if split == "train" else num_train + label  # test classes are unseen
    proto = np.random.default_rng([int(cfg.seed), cls]).normal(size=(4, 4, 3))
    reps = -(-image_size // 4)
    pattern = np.kron(proto, np.ones((reps, reps, 1)))[:image_size, :image_size]
    noise = np.random.default_rng([int(cfg.seed), 1 << 20, index, split == "train"]).normal(
        size=pattern.shape
    )
    image = (pattern + float(cfg.noise) * noise).astype(np.float32)
    return {"image": image, "label": np.int32(label), "id": np.int64(index)}


def _synthetic(config: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
    cfg = config.input.synthetic
    n = int(cfg.train_size if split == "train" else cfg.test_size)
    size = int(config.input.image_size)
    return grain.MapDataset.range(n).map(
        lambda i: _synthetic_example(int(i), split=split, cfg=cfg, image_size=size)
    )


# ----------------------------------------------------------------------------- public API


def num_train_classes(config: ml_collections.ConfigDict) -> int:
    """Rows of the ArcFace / Proxy Anchor head: ``config.num_classes``, or the dataset's."""
    if config.get("num_classes"):
        return int(config.num_classes)
    if config.input.name == "synthetic":
        return int(config.input.synthetic.num_train_classes)
    from pairviz_jax import data

    return int(data.num_train_classes(config.input.name, data_dir=config.input.get("data_dir")))


def normalization(
    config: ml_collections.ConfigDict,
) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """Per-channel (mean, std) applied on device to uint8 images; None for float inputs."""
    if config.input.name == "synthetic":
        return None, None
    if config.input.get("mean") is not None:
        return tuple(config.input.mean), tuple(config.input.std)
    from pairviz_jax.data.preprocess import NORMALIZATION

    mean, std = NORMALIZATION[config.input.get("normalization") or config.input.name]
    return tuple(mean), tuple(std)


def _strip(example: dict[str, Any]) -> dict[str, Any]:
    return {"image": example["image"], "label": example["label"]}


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    local_batch: int,
    process_index: int,
    process_count: int,
    start_step: int = 0,
) -> Iterator[Batch]:
    """This process's slice of every global training batch from ``start_step`` on, endless.

    Every process draws the same global order (a per-epoch permutation of the whole split
    from ``config.seed``, ``pairviz_jax.data.pipeline.GlobalOrder``); process ``i`` of ``n``
    yields the ``i``-th consecutive ``local_batch`` block of each global batch of
    ``n * local_batch`` examples (what ``jax.make_array_from_process_local_data`` expects).
    The global batches depend only on the config and the step, not on ``n``: a run resumed
    at ``start_step`` with another process count reads what an uninterrupted one would.
    """
    seed = int(config.seed)
    if config.input.name == "synthetic":
        from pairviz_jax.data.pipeline import GlobalOrder

        examples = _synthetic(config, "train")
        order = GlobalOrder(len(examples), local_batch * process_count, seed)

        def local_example(t: int) -> dict[str, Any]:
            position = order.local_position(t, shard_index=process_index, shard_count=process_count)
            return _strip(examples[order.record(position)])

        ds = grain.MapDataset.range(int(start_step) * local_batch, 2**62).map(local_example)
        return iter(ds.batch(local_batch, drop_remainder=True))
    from pairviz_jax import data

    ds = data.make_dataset(
        config.input.name,
        config.input.train_split,
        data_dir=config.input.get("data_dir"),
        image_size=int(config.input.image_size),
        train=True,
        seed=seed,
        batch_size=local_batch,
        shard_index=process_index,
        shard_count=process_count,
        start_batch=int(start_step),
        **_options(config),
    )
    return iter(ds)


def _options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Extra keyword arguments for ``pairviz_jax.data.make_dataset`` (``config.input.options``)."""
    options = config.input.get("options")
    return dict(options) if options else {}


def eval_batches(
    config: ml_collections.ConfigDict,
    *,
    local_batch: int,
    process_index: int,
    process_count: int,
    split: str | None = None,
    options: dict[str, Any] | None = None,
) -> Iterator[Batch]:
    """This process's share of an evaluation split, padded, with ``valid`` [b] bool.

    Every process yields ``ceil(ceil(N / n) / local_batch)`` batches.

    Args:
      config: the run config.
      local_batch: examples per batch on this process.
      process_index, process_count: this process among all.
      split: default ``config.input.eval_split``.
      options: ``make_dataset`` keyword arguments replacing ``config.input.options``.
    """
    split = split or config.input.eval_split
    if config.input.name == "synthetic":
        ds = _synthetic(config, "train" if split == "train" else "test")
        n = len(ds)
        max_examples = config.eval.get("max_examples")
        if max_examples:
            n = min(n, int(max_examples))
        per_process = -(-n // process_count)
        num_batches = -(-per_process // local_batch)
        mine = list(range(process_index, n, process_count))
        for b in range(num_batches):
            idx = mine[b * local_batch : (b + 1) * local_batch]
            examples = [ds[i] for i in idx]
            valid = np.zeros((local_batch,), bool)
            valid[: len(idx)] = True
            if not examples:  # this process ran out: a fully padded batch
                examples = [ds[0]]
            pad = [examples[-1]] * (local_batch - len(examples))
            ex = examples + pad
            yield {
                "image": np.stack([e["image"] for e in ex]),
                "label": np.stack([e["label"] for e in ex]),
                "valid": valid,
            }
        return
    from pairviz_jax import data

    ds = data.make_dataset(
        config.input.name,
        split,
        data_dir=config.input.get("data_dir"),
        image_size=int(config.input.image_size),
        train=False,
        batch_size=local_batch,
        shard_index=process_index,
        shard_count=process_count,
        **(_options(config) if options is None else dict(options)),
    )
    for batch in ds:
        yield {"image": batch["image"], "label": batch["label"], "valid": batch["valid"]}
