"""Any folder of class subfolders, one folder per split.

Layout::

    <manual_dir>/<split>/<class_name>/<image file>

Every subfolder of ``manual_dir`` is a split (``train``, ``test``, ...). ``label``
numbers the class names, the train split's sorted names first (see
``builders.base``); ``id`` is the image's position in the split's sorted file list.
Prepare::

    python -m pairviz_jax.data.prepare image_folder --manual_dir /path/to/folder
"""

from __future__ import annotations

import os

from pairviz_jax.data.builders.base import ImageRecord, ManualImageBuilder, rank_labels, walk_images

__all__ = ["PairvizImageFolder"]


class PairvizImageFolder(ManualImageBuilder):
    """A folder ``<split>/<class>/<image>``; splits and classes from the folder names."""

    name = "pairviz_image_folder"
    DESCRIPTION = "Images in <split>/<class_name>/ folders."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    manual_dir holds one folder per split, each with one folder per class:
    <manual_dir>/<split>/<class_name>/<image>."""

    def _split_records(self, manual_dir: str) -> dict[str, list[ImageRecord]]:
        splits = sorted(
            d for d in os.listdir(manual_dir) if os.path.isdir(os.path.join(manual_dir, d))
        )
        if not splits:
            raise ValueError(f"{manual_dir}: expected <split>/<class_name>/ subfolders, found none")
        items = {}
        for split in splits:
            root = os.path.join(manual_dir, split)
            classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            stray = [f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f))]
            if stray and not classes:
                raise ValueError(
                    f"{root}: expected class subfolders, found only files such as {stray[0]!r}"
                )
            items[split] = [
                (path, c) for c in classes for path in walk_images(os.path.join(root, c))
            ]
        labels = rank_labels(
            (c for _, c in items.get("train", [])),
            (c for split, pairs in items.items() for _, c in pairs),
        )
        return {
            split: [
                ImageRecord(
                    path=path, label=labels[c], id=i, file_name=os.path.relpath(path, manual_dir)
                )
                for i, (path, c) in enumerate(pairs)
            ]
            for split, pairs in items.items()
        }
