"""Stanford Online Products (Song et al., CVPR 2016) from its published zip layout.

Layout (``Stanford_Online_Products.zip`` unpacked; the manual directory is the folder
holding the lists)::

    Stanford_Online_Products/
      Ebay_train.txt   # "image_id class_id super_class_id path", 59,551 rows
      Ebay_test.txt    # 60,502 rows; classes 11,319..22,634, disjoint from train
      bicycle_final/111085122871_0.JPG ...

``label`` is ``class_id - 1`` (train 0..11,317, test 11,318..22,633), ``id`` the
``image_id`` of the list. Prepare::

    python -m pairviz_jax.data.prepare sop --manual_dir /path/to/Stanford_Online_Products
"""

from __future__ import annotations

import os

from pairviz_jax.data.builders.base import ImageRecord, ManualImageBuilder, find_file

__all__ = ["PairvizSop"]

_LISTS = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}
_COLUMNS = ("image_id", "class_id", "super_class_id", "path")


def read_list(path: str, manual_dir: str) -> list[ImageRecord]:
    """Parses an ``Ebay_{train,test}.txt`` list.

    Raises:
      ValueError: naming the file and line, if the header or a row is malformed.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().split()
        if tuple(header) != _COLUMNS:
            raise ValueError(f"{path}: expected the header {' '.join(_COLUMNS)!r}, got {header}")
        for line_no, line in enumerate(f, start=2):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 4:
                raise ValueError(f"{path}:{line_no}: expected 4 columns {_COLUMNS}, got {line!r}")
            try:
                image_id, class_id = int(parts[0]), int(parts[1])
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: image_id and class_id must be ints") from e
            rel = parts[3]
            records.append(
                ImageRecord(
                    path=os.path.join(manual_dir, rel),
                    label=class_id - 1,
                    id=image_id,
                    file_name=rel,
                )
            )
    return records


class PairvizSop(ManualImageBuilder):
    """Stanford Online Products, train (59,551) and test (60,502) splits."""

    name = "pairviz_sop"
    DESCRIPTION = "Stanford Online Products, read from a local copy in its published layout."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    manual_dir is the unpacked Stanford_Online_Products/ folder: Ebay_train.txt,
    Ebay_test.txt and the <super_class>_final/ image folders."""

    def _split_records(self, manual_dir: str) -> dict[str, list[ImageRecord]]:
        return {
            split: read_list(find_file(manual_dir, file_name), manual_dir)
            for split, file_name in _LISTS.items()
        }
