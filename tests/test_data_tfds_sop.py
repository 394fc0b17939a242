"""Reading TFDS's own stanford_online_products (prepared by TFDS) through the pipeline.

``tfds.testing.mock_data`` stands in for a user's prepared copy; no TensorFlow needed.
"""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pairviz_jax.data import make_dataset, num_train_classes, open_source


@pytest.fixture
def mock_sop():
    with tfds.testing.mock_data(num_examples=10):
        yield


def test_raw_source_schema(mock_sop):
    source = open_source("tfds_sop", "train")
    assert len(source) == 10
    ex = source[3]
    assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3
    assert ex["label"].dtype == np.int32 and 0 <= int(ex["label"]) < 22634
    assert int(ex["id"]) == 3  # the record index: TFDS's SOP has no image id


def test_training_batches(mock_sop):
    it = iter(
        make_dataset(
            "tfds_sop",
            "train",
            train=True,
            batch_size=4,
            image_size=32,
            seed=0,
            shard_index=0,
            shard_count=1,
        )
    )
    batches = [next(it) for _ in range(3)]  # 10 examples: the third batch is the second epoch
    for batch in batches:
        assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert "mask" not in batch
    first_epoch = np.concatenate([b["id"] for b in batches[:2]])
    assert len(set(first_epoch.tolist())) == 8


def test_evaluation_is_padded_and_normalised(mock_sop):
    ds = make_dataset(
        "tfds_sop",
        "test",
        batch_size=4,
        image_size=16,
        normalize=True,
        shard_index=0,
        shard_count=1,
    )
    batches = list(ds)
    assert len(batches) == 3
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 10 and not valid[10:].any()
    assert batches[0]["image"].dtype == np.float32
    raw = next(
        iter(
            make_dataset(
                "tfds_sop", "test", batch_size=4, image_size=16, shard_index=0, shard_count=1
            )
        )
    )
    expected = (raw["image"] / 255.0 - np.array([0.5807, 0.5396, 0.5044])) / np.array(
        [0.2901, 0.2974, 0.3095]
    )
    np.testing.assert_allclose(batches[0]["image"], expected, atol=1e-5)
    assert num_train_classes("tfds_sop") == 11318
    assert "tensorflow" not in sys.modules
