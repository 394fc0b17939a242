"""Hotels-50k (Stylianou et al., AAAI 2019) from its published image tree.

Layout (``images/`` as written by the authors' ``download_train.py`` and the unpacked
``test.tar.gz``; the manual directory is the repository root holding ``images/``)::

    images/train/<chain_id>/<hotel_id>/<data_source>/<image_id>.jpg
    images/test/unoccluded/<chain_id>/<hotel_id>/<data_source>/<image_id>.jpg
    images/test/{low,medium,high}_occlusions/...   # same tree, plus masks/ folders

Splits: ``train`` and ``test`` (the ``unoccluded`` test images, as in the paper;
``PairvizHotels50k(test_subset="high_occlusions")`` picks another). ``label`` numbers
the hotels (train hotels first, see ``builders.base``), ``id`` is the image id. Prepare::

    python -m pairviz_jax.data.prepare hotels50k --manual_dir /path/to/Hotels-50K
"""

from __future__ import annotations

import os

from pairviz_jax.data.builders.base import (
    ImageRecord,
    ManualImageBuilder,
    rank_labels,
    walk_images,
)

__all__ = ["PairvizHotels50k"]

TEST_SUBSETS = ("unoccluded", "low_occlusions", "medium_occlusions", "high_occlusions")


def _parse(path: str, root: str) -> tuple[str, int]:
    """(hotel_id, image_id) from ``<root>/<chain>/<hotel>/<source>/<image_id>.<ext>``."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    stem = os.path.splitext(parts[-1])[0]
    if len(parts) != 4 or not stem.isdigit():
        raise ValueError(
            f"{path}: expected <chain_id>/<hotel_id>/<data_source>/<image_id>.jpg under {root}"
        )
    return parts[1], int(stem)


class PairvizHotels50k(ManualImageBuilder):
    """Hotels-50k, train (about 1.03M images) and test (17,954 unoccluded) splits."""

    name = "pairviz_hotels50k"
    DESCRIPTION = "Hotels-50k, read from a local copy of its images/ tree."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    manual_dir holds images/train/<chain_id>/<hotel_id>/<data_source>/<image_id>.jpg
    (download_train.py) and images/test/unoccluded/... (test.tar.gz unpacked in images/)."""

    def __init__(self, *, test_subset: str = "unoccluded", **kwargs):
        if test_subset not in TEST_SUBSETS:
            raise ValueError(f"test_subset must be one of {TEST_SUBSETS}, got {test_subset!r}")
        self.test_subset = test_subset
        super().__init__(**kwargs)

    def _split_records(self, manual_dir: str) -> dict[str, list[ImageRecord]]:
        roots = {
            "train": os.path.join(manual_dir, "images", "train"),
            "test": os.path.join(manual_dir, "images", "test", self.test_subset),
        }
        parsed = {}
        for split, root in roots.items():
            if not os.path.isdir(root):
                raise ValueError(f"{self.name}: missing directory {root} (split {split!r})")
            parsed[split] = [(path, *_parse(path, root)) for path in walk_images(root)]
        labels = rank_labels(
            (hotel for _, hotel, _ in parsed["train"]), (hotel for _, hotel, _ in parsed["test"])
        )
        return {
            split: [
                ImageRecord(
                    path=path,
                    label=labels[hotel],
                    id=image_id,
                    file_name=os.path.relpath(path, manual_dir),
                )
                for path, hotel, image_id in items
            ]
            for split, items in parsed.items()
        }
