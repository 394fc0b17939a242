"""The TFDS builders on small fixture trees in each published layout, without TensorFlow.

Each tree holds good RGB JPEGs, a grayscale JPEG and a corrupt (truncated) JPEG; GLDv2's
also lists an image that is missing. Prepared as array_record and read back through
``tfds.data_source`` and ``make_dataset``.
"""

import io
import logging
import os
import sys

import numpy as np
import pytest
from PIL import Image

from pairviz_jax.data import make_dataset, num_train_classes, open_source
from pairviz_jax.data.builders.gldv2 import image_id_to_int64
from pairviz_jax.data.prepare import main, prepare


def _jpeg(path, seed, gray=False, size=(18, 22)):
    rng = np.random.default_rng(seed)
    shape = size if gray else (*size, 3)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, format="JPEG")


def _corrupt(path):
    _jpeg(path, 99, size=(40, 40))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _read_all(name, split, data_dir):
    """{id: (label, image)} through the evaluation pipeline at 8 px."""
    ds = make_dataset(name, split, data_dir=data_dir, image_size=8, shard_index=0, shard_count=1)
    out = {}
    for e in ds:
        assert e["image"].shape == (8, 8, 3) and e["image"].dtype == np.uint8
        out[int(e["id"])] = int(e["label"])
    return out


def _no_tensorflow():
    assert "tensorflow" not in sys.modules


@pytest.fixture
def sop_tree(tmp_path):
    root = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path"
    train = [
        (1, 1, 1, "bicycle_final/1_0.JPG"),
        (2, 1, 1, "bicycle_final/1_1.JPG"),
        (3, 2, 3, "chair_final/2_0.JPG"),
        (4, 2, 3, "chair_final/2_gray.JPG"),
        (5, 3, 3, "chair_final/3_bad.JPG"),
    ]
    test = [(6, 11319, 2, "cabinet_final/9_0.JPG"), (7, 11320, 2, "cabinet_final/9_1.JPG")]
    for rows, list_name in ((train, "Ebay_train.txt"), (test, "Ebay_test.txt")):
        lines = [header] + [" ".join(map(str, r)) for r in rows]
        root.mkdir(exist_ok=True)
        (root / list_name).write_text("\n".join(lines) + "\n")
        for image_id, _, _, rel in rows:
            path = str(root / rel)
            if "bad" in rel:
                _corrupt(path)
            else:
                _jpeg(path, image_id, gray="gray" in rel)
    return root


def test_sop_builder(sop_tree, tmp_path, caplog):
    data_dir = str(tmp_path / "tfds")
    with caplog.at_level(logging.WARNING):
        builder = prepare("sop", str(sop_tree), data_dir=data_dir)
    assert builder.skipped == {"train": 1, "test": 0}
    assert any("3_bad.JPG" in r.getMessage() for r in caplog.records)
    assert builder.info.splits["train"].num_examples == 4
    assert _read_all("sop", "train", data_dir) == {1: 0, 2: 0, 3: 1, 4: 1}
    assert _read_all("sop", "test", data_dir) == {6: 11318, 7: 11319}
    # Class 3's only image is corrupt: it still counts, labels are class_id - 1.
    assert num_train_classes("sop", data_dir=data_dir) == 3
    # RGB JPEGs are stored byte for byte; the grayscale one decodes to 3 channels.
    source = open_source("sop", "train", data_dir=data_dir)
    by_id = {int(source[i]["id"]): source[i]["image"] for i in range(len(source))}
    assert by_id[1] == (sop_tree / "bicycle_final/1_0.JPG").read_bytes()
    assert Image.open(io.BytesIO(by_id[4])).mode == "RGB"
    _no_tensorflow()


def test_sop_layout_errors(sop_tree, tmp_path):
    (sop_tree / "Ebay_test.txt").unlink()
    with pytest.raises(ValueError, match="Ebay_test.txt not found"):
        prepare("sop", str(sop_tree), data_dir=str(tmp_path / "tfds"))
    (sop_tree / "Ebay_test.txt").write_text("id class path\n1 1 x.jpg\n")
    with pytest.raises(ValueError, match="Ebay_test.txt: expected the header"):
        prepare("sop", str(sop_tree), data_dir=str(tmp_path / "tfds2"))


def test_hotels50k_builder(tmp_path):
    root = tmp_path / "Hotels-50K"
    train = root / "images" / "train"
    _jpeg(str(train / "5" / "300" / "travel_website" / "11.jpg"), 11)
    _jpeg(str(train / "5" / "300" / "traffickcam" / "12.jpg"), 12, gray=True)
    _jpeg(str(train / "8" / "100" / "travel_website" / "13.png"), 13)
    _corrupt(str(train / "8" / "100" / "travel_website" / "14.jpg"))
    (train / "8" / "100" / "notes.txt").write_text("not an image")
    test = root / "images" / "test"
    _jpeg(str(test / "unoccluded" / "5" / "300" / "traffickcam" / "21.jpg"), 21)
    _jpeg(str(test / "unoccluded" / "9" / "777" / "traffickcam" / "22.jpg"), 22)
    _jpeg(str(test / "high_occlusions" / "5" / "300" / "traffickcam" / "21.jpg"), 23)
    _jpeg(str(test / "high_occlusions" / "5" / "300" / "traffickcam" / "masks" / "21.jpg"), 24)

    data_dir = str(tmp_path / "tfds")
    builder = prepare("hotels50k", str(root), data_dir=data_dir)
    assert builder.skipped == {"train": 1, "test": 0}
    # Hotels numbered train first (100 -> 0, 300 -> 1), then the test-only 777 -> 2.
    assert _read_all("hotels50k", "train", data_dir) == {11: 1, 12: 1, 13: 0}
    assert _read_all("hotels50k", "test", data_dir) == {21: 1, 22: 2}
    assert num_train_classes("hotels50k", data_dir=data_dir) == 2

    occluded = prepare(
        "hotels50k", str(root), data_dir=str(tmp_path / "tfds_occ"), test_subset="high_occlusions"
    )
    assert occluded.info.splits["test"].num_examples == 1  # masks/ is not a test image
    _no_tensorflow()


def test_hotels50k_layout_errors(tmp_path):
    root = tmp_path / "h"
    _jpeg(str(root / "images" / "train" / "5" / "300" / "11.jpg"), 1)  # no data_source level
    (root / "images" / "test" / "unoccluded").mkdir(parents=True)
    with pytest.raises(ValueError, match="expected <chain_id>/<hotel_id>/<data_source>"):
        prepare("hotels50k", str(root), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="test_subset"):
        prepare("hotels50k", str(root), data_dir=str(tmp_path / "tfds"), test_subset="all")


def test_gldv2_clean_builder(tmp_path):
    root = tmp_path / "gldv2"
    ids = {
        "train": [
            "00a1b2c3d4e5f601",
            "00a1b2c3d4e5f602",
            "ffeeddccbbaa0003",
            "1234567890abcdef",
            "0badbadbadbad000",
            "0000111122223333",
        ],
        "index": ["abcdef0123456789", "fedcba9876543210"],
    }
    meta = root / "metadata"
    meta.mkdir(parents=True)
    # landmark 50: two good images and the corrupt one; 7: grayscale and the missing one.
    (meta / "train_clean.csv").write_text(
        "landmark_id,images\n"
        f"50,{ids['train'][0]} {ids['train'][1]} {ids['train'][4]}\n"
        f"7,{ids['train'][2]} {ids['train'][5]}\n"
        f"9,{ids['train'][3]}\n"
    )
    (meta / "index_image_to_landmark.csv").write_text(
        f"id,landmark_id\n{ids['index'][0]},50\n{ids['index'][1]},123\n"
    )

    def path(folder, image_id):
        return str(root / folder / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg")

    for i, image_id in enumerate(ids["train"][:4]):
        _jpeg(path("train", image_id), i, gray=i == 2)
    _corrupt(path("train", ids["train"][4]))  # ids["train"][5] is listed but missing
    for i, image_id in enumerate(ids["index"]):
        _jpeg(path("index", image_id), 10 + i)

    data_dir = str(tmp_path / "tfds")
    builder = prepare("gldv2_clean", str(root), data_dir=data_dir)
    assert builder.skipped == {"train": 2, "test": 0}
    # Landmarks numbered train first (7 -> 0, 9 -> 1, 50 -> 2), then 123 -> 3.
    to_id = image_id_to_int64
    assert _read_all("gldv2_clean", "train", data_dir) == {
        to_id(ids["train"][0]): 2,
        to_id(ids["train"][1]): 2,
        to_id(ids["train"][2]): 0,
        to_id(ids["train"][3]): 1,
    }
    assert _read_all("gldv2_clean", "test", data_dir) == {
        to_id(ids["index"][0]): 2,
        to_id(ids["index"][1]): 3,
    }
    assert num_train_classes("gldv2_clean", data_dir=data_dir) == 3
    _no_tensorflow()


def test_gldv2_image_ids_are_reversible_int64():
    assert image_id_to_int64("0000000000000001") == 1
    assert image_id_to_int64("ffffffffffffffff") == -1
    assert image_id_to_int64("7fffffffffffffff") == 2**63 - 1
    with pytest.raises(ValueError, match="hexadecimal"):
        image_id_to_int64("xyz")


def test_gldv2_missing_csv_names_the_places_looked(tmp_path):
    (tmp_path / "g" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"train_clean.csv not found; looked for: .*metadata"):
        prepare("gldv2_clean", str(tmp_path / "g"), data_dir=str(tmp_path / "tfds"))


def test_image_folder_builder_and_cli(tmp_path, capsys):
    root = tmp_path / "folder"
    _jpeg(str(root / "train" / "cat" / "a.jpg"), 1)
    _jpeg(str(root / "train" / "cat" / "b.jpg"), 2, gray=True)
    _corrupt(str(root / "train" / "dog" / "c.jpg"))
    _jpeg(str(root / "train" / "dog" / "d.jpeg"), 3)
    _jpeg(str(root / "test" / "bird" / "e.jpg"), 4)
    _jpeg(str(root / "test" / "dog" / "f.jpg"), 5)
    data_dir = str(tmp_path / "tfds")
    assert main(["image_folder", "--manual_dir", str(root), "--data_dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "pairviz_image_folder/train: 3 examples, 1 skipped" in out
    # Sorted files: a, b, c (skipped), d -> ids 0, 1, 3; classes cat 0, dog 1, bird 2.
    assert _read_all("image_folder", "train", data_dir) == {0: 0, 1: 0, 3: 1}
    assert _read_all("image_folder", "test", data_dir) == {0: 2, 1: 1}
    _no_tensorflow()


def test_cli_reports_layout_errors(tmp_path, capsys):
    assert main(["sop", "--manual_dir", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["sop", "--manual_dir", str(tmp_path / "empty")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(ValueError, match="python -m pairviz_jax.data.prepare hotels50k"):
        make_dataset("hotels50k", "train", data_dir=str(tmp_path), shard_index=0, shard_count=1)
