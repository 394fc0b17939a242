"""The shared input pipeline (pairviz_jax.data.make_dataset) on the demo and fake sources."""

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from pairviz_jax.data import make_dataset, skipped_counts
from pairviz_jax.data.preprocess import normalize

DEMO = dict(shard_index=0, shard_count=1, image_size=16, demo_examples_per_class=2)  # 48 train


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


class _JpegSource:
    """n examples of encoded JPEG bytes; ``bad`` indices hold corrupt bytes."""

    def __init__(self, n, bad=(), size=(20, 24)):
        self.n, self.bad, self.size = n, set(bad), size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*self.size, 3), dtype=np.uint8)).save(buf, "JPEG")
        data = buf.getvalue()
        if i in self.bad:
            data = data[: len(data) // 3]
        return {"image": data, "label": np.int32(i % 3), "id": np.int64(100 + i)}


def test_train_batches_schema():
    it = iter(make_dataset("demo", "train", train=True, batch_size=8, seed=0, **DEMO))
    batch = next(it)
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["mask"].shape == (8, 16, 16) and batch["mask"].dtype == bool
    assert batch["label"].dtype == np.int32 and batch["id"].dtype == np.int64
    assert "valid" not in batch


def test_train_order_is_deterministic_for_a_seed_and_threads():
    a = _take(iter(make_dataset("demo", "train", train=True, batch_size=8, seed=1, **DEMO)), 8)
    b = _take(
        iter(
            make_dataset("demo", "train", train=True, batch_size=8, seed=1, num_threads=1, **DEMO)
        ),
        8,
    )
    c = _take(iter(make_dataset("demo", "train", train=True, batch_size=8, seed=2, **DEMO)), 8)
    _assert_same(a, b)
    assert not np.array_equal(a[0]["id"], c[0]["id"])
    # Each epoch (6 batches of the 48 examples) is a permutation, reshuffled per epoch.
    first = np.concatenate([x["id"] for x in a[:6]])
    assert sorted(first.tolist()) == list(range(48))
    second = np.concatenate([x["id"] for x in a[6:8]])
    assert not np.array_equal(first[:16], second)


def test_train_iterator_resumes_from_a_json_state():
    ds = make_dataset("demo", "train", train=True, batch_size=8, seed=4, **DEMO)
    it = iter(ds)
    _take(it, 7)  # into the second epoch
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 5)
    resumed = iter(make_dataset("demo", "train", train=True, batch_size=8, seed=4, **DEMO))
    resumed.set_state(state)
    _assert_same(_take(resumed, 5), expected)


def test_eval_is_ordered_resized_and_padded_with_valid():
    batches = list(make_dataset("demo", "test", batch_size=10, **DEMO))
    assert len(batches) == 5  # 48 examples -> 4 full batches + 8 real and 2 padding
    ids = np.concatenate([b["id"] for b in batches])
    valid = np.concatenate([b["valid"] for b in batches])
    np.testing.assert_array_equal(ids[valid], np.arange(48))
    assert valid.sum() == 48 and not valid[48:].any()
    assert (batches[-1]["label"][~batches[-1]["valid"]] == -1).all()
    assert not batches[-1]["image"][~batches[-1]["valid"]].any()
    assert not batches[-1]["mask"][~batches[-1]["valid"]].any()
    # Evaluation is a plain resize of the drawn image: the same pixels at the same size.
    from pairviz_jax.data import demo

    np.testing.assert_array_equal(
        batches[1]["image"][3], demo.render_example("test", 13, image_size=16)["image"]
    )


def test_eval_shards_are_disjoint_cover_the_split_and_have_equal_batches():
    seen, counts = [], []
    for index in range(3):
        ds = make_dataset(
            "demo",
            "test",
            batch_size=4,
            shard_index=index,
            shard_count=3,
            image_size=16,
            demo_examples_per_class=1,
        )
        batches = list(ds)
        counts.append(len(batches))
        seen += [int(i) for b in batches for i, v in zip(b["id"], b["valid"], strict=True) if v]
    assert counts == [2, 2, 2]
    assert sorted(seen) == list(range(24))


def test_train_shards_are_disjoint():
    ids = []
    for index in range(2):
        ds = make_dataset(
            "demo",
            "train",
            train=True,
            seed=0,
            shard_index=index,
            shard_count=2,
            image_size=16,
            demo_examples_per_class=1,
            num_epochs=1,
        )
        ids.append({int(e["id"]) for e in ds})
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == set(range(24))


def test_unbatched_eval_resumes():
    ds = make_dataset("demo", "test", **DEMO)
    it = iter(ds)
    _take(it, 5)
    state = it.get_state()
    expected = _take(it, 3)
    it2 = iter(ds)
    it2.set_state(state)
    _assert_same(_take(it2, 3), expected)
    assert [int(e["id"]) for e in expected] == [5, 6, 7]


def test_normalize_option_matches_normalize():
    raw = next(iter(make_dataset("demo", "test", **DEMO)))
    norm = next(iter(make_dataset("demo", "test", normalize=True, **DEMO)))
    assert norm["image"].dtype == np.float32
    np.testing.assert_allclose(norm["image"], normalize(raw["image"], "demo"), atol=1e-6)


def test_corrupt_images_are_counted_and_replaced_in_training(caplog):
    source = _JpegSource(10, bad={3, 7})
    before = skipped_counts().get(("image_folder", "fake"), 0)
    with caplog.at_level(logging.WARNING):
        ds = make_dataset(
            "image_folder",
            "fake",
            source=source,
            train=True,
            num_epochs=1,
            batch_size=2,
            image_size=8,
            shard_index=0,
            shard_count=1,
        )
        batches = [b["id"].tolist() for b in ds]
    # The layout of global batches stays fixed: a bad record's slot is filled by a record
    # of another global batch of the epoch, never one already in the batch.
    assert len(batches) == 5 and all(len(set(b)) == 2 for b in batches)
    ids = [i for b in batches for i in b]
    assert 103 not in ids and 107 not in ids
    assert set(ids) <= {100 + i for i in range(10) if i not in (3, 7)}
    assert skipped_counts()[("image_folder", "fake")] - before >= 2
    assert any("skipping unreadable" in r.getMessage() for r in caplog.records)


def test_corrupt_images_become_invalid_slots_in_eval_batches():
    ds = make_dataset(
        "image_folder",
        "fake2",
        source=_JpegSource(6, bad={2}),
        batch_size=4,
        image_size=8,
        shard_index=0,
        shard_count=1,
    )
    batches = list(ds)
    valid = np.concatenate([b["valid"] for b in batches])
    ids = np.concatenate([b["id"] for b in batches])
    assert valid.tolist() == [True, True, False, True, True, True, False, False]
    assert ids[valid].tolist() == [100, 101, 103, 104, 105]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        make_dataset("nope", "train", shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="shard_index"):
        make_dataset("demo", "train", shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset("demo", "train", batch_size=0, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="demo split"):
        make_dataset("demo", "val", shard_index=0, shard_count=1)


def test_default_shard_is_the_jax_process():
    # One process here: the default shard is the whole split.
    ids = [
        int(e["id"]) for e in make_dataset("demo", "test", image_size=16, demo_examples_per_class=1)
    ]
    assert ids == list(range(24))
