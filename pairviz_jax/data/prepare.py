"""Prepares a local copy of a dataset as TFDS ``array_record`` files, without TensorFlow.

Usage::

    python -m pairviz_jax.data.prepare sop --manual_dir /data/Stanford_Online_Products
    python -m pairviz_jax.data.prepare hotels50k --manual_dir /data/Hotels-50K
    python -m pairviz_jax.data.prepare gldv2_clean --manual_dir /data/gldv2
    python -m pairviz_jax.data.prepare image_folder --manual_dir /data/my_folder

``--data_dir`` (default: TFDS's, ``~/tensorflow_datasets``) is where the prepared files
go; pass the same directory as ``data_dir`` to ``make_dataset``. Nothing is downloaded.
The demo dataset needs no preparation.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "prepare"]


def prepare(name: str, manual_dir: str, *, data_dir: str | None = None, **builder_kwargs):
    """Prepares dataset ``name`` from ``manual_dir`` into ``data_dir``.

    Args:
      name: ``sop``, ``hotels50k``, ``gldv2_clean`` or ``image_folder``.
      manual_dir: the local copy in the dataset's published layout.
      data_dir: TFDS data directory to write to (default TFDS's).
      **builder_kwargs: builder options, e.g. ``test_subset`` for ``hotels50k``.

    Returns:
      The prepared builder; ``builder.skipped`` has the unreadable images per split.

    Raises:
      ValueError: for an unknown name, a missing ``manual_dir`` or a wrong layout.
    """
    import tensorflow_datasets as tfds

    from pairviz_jax.data.builders import BUILDERS

    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r} to prepare; expected one of {sorted(BUILDERS)}")
    if not os.path.isdir(manual_dir):
        raise ValueError(f"--manual_dir {manual_dir!r} is not a directory")
    if not os.listdir(manual_dir):
        raise ValueError(f"--manual_dir {manual_dir!r} is empty")
    builder = BUILDERS[name](data_dir=data_dir, **builder_kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir))
    )
    return builder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="sop | hotels50k | gldv2_clean | image_folder")
    parser.add_argument("--manual_dir", required=True, help="local copy in the published layout")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory to write")
    parser.add_argument(
        "--test_subset", default=None, help="hotels50k only: unoccluded (default) or *_occlusions"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kwargs = {"test_subset": args.test_subset} if args.test_subset else {}
    try:
        builder = prepare(args.name, args.manual_dir, data_dir=args.data_dir, **kwargs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, info in builder.info.splits.items():
        skipped = builder.skipped.get(split, 0)
        print(f"{builder.name}/{split}: {info.num_examples} examples, {skipped} skipped")
    print(f"prepared in {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
