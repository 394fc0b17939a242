"""Google Landmarks v2, clean training set (Weyand et al., CVPR 2020; Yokoo et al. 2020).

Layout (the CVDF tars unpacked; metadata CSVs in the root, ``metadata/`` or beside the
images)::

    train_clean.csv                  # landmark_id,images (space-separated image ids)
    index_image_to_landmark.csv      # id,landmark_id
    train/<a>/<b>/<c>/<abc...>.jpg   # an image id's first three characters are folders
    index/<a>/<b>/<c>/<abc...>.jpg

Splits: ``train`` (GLDv2-clean, 1,580,470 images of 81,313 landmarks) and ``test`` (the
761,757 labelled index images, the paper's GLM test set). Images listed but missing are
counted and skipped like corrupt ones. ``label`` numbers the landmarks (train ones
first, see ``builders.base``); ``id`` is the 16-hex-digit image id read as a signed
int64 (two's complement), ``file_name`` keeps the path. Prepare::

    python -m pairviz_jax.data.prepare gldv2_clean --manual_dir /path/to/gldv2
"""

from __future__ import annotations

import csv
import os

from pairviz_jax.data.builders.base import ImageRecord, ManualImageBuilder, find_file, rank_labels

__all__ = ["PairvizGldv2Clean", "image_id_to_int64"]

_META_DIRS = ("", "metadata", "meta", "train", "index")


def image_id_to_int64(image_id: str) -> int:
    """A 16-hex-digit GLDv2 image id as a signed int64 (reversible, so unique)."""
    try:
        raw = bytes.fromhex(image_id)
    except ValueError as e:
        raise ValueError(f"GLDv2 image id must be hexadecimal, got {image_id!r}") from e
    if len(raw) > 8:
        raise ValueError(f"GLDv2 image id must have at most 16 hex digits, got {image_id!r}")
    return int.from_bytes(raw, "big", signed=len(raw) == 8)


def _read_csv(path: str, columns: tuple[str, str]) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns {columns}, got {reader.fieldnames}")
        return [(row[columns[0]], row[columns[1]]) for row in reader]


def _image_path(folder: str, image_id: str) -> str:
    if len(image_id) < 3:
        raise ValueError(f"GLDv2 image id {image_id!r} is too short")
    return os.path.join(folder, image_id[0], image_id[1], image_id[2], image_id + ".jpg")


class PairvizGldv2Clean(ManualImageBuilder):
    """GLDv2-clean train split and the labelled index set as test split."""

    name = "pairviz_gldv2_clean"
    DESCRIPTION = "Google Landmarks v2 (clean train, labelled index), from a local copy."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    manual_dir holds train_clean.csv and index_image_to_landmark.csv (in the root,
    metadata/ or meta/) and the unpacked image folders train/a/b/c/<id>.jpg and
    index/a/b/c/<id>.jpg."""

    def _split_records(self, manual_dir: str) -> dict[str, list[ImageRecord]]:
        train_csv = find_file(manual_dir, "train_clean.csv", _META_DIRS)
        index_csv = find_file(manual_dir, "index_image_to_landmark.csv", _META_DIRS)
        train = []
        for landmark, images in _read_csv(train_csv, ("landmark_id", "images")):
            train.extend((image_id, int(landmark)) for image_id in images.split())
        test = [
            (image_id, int(landmark))
            for image_id, landmark in _read_csv(index_csv, ("id", "landmark_id"))
        ]
        labels = rank_labels((lm for _, lm in train), (lm for _, lm in test))
        out = {}
        for split, folder, items in (("train", "train", train), ("test", "index", test)):
            out[split] = []
            for image_id, landmark in sorted(items):
                rel = _image_path(folder, image_id)
                out[split].append(
                    ImageRecord(
                        path=os.path.join(manual_dir, rel),
                        label=labels[landmark],
                        id=image_id_to_int64(image_id),
                        file_name=rel,
                    )
                )
        return out
