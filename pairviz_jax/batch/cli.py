"""``visualize.py batch``: its options and its run (the dispatcher adds the model options)."""

from __future__ import annotations

import argparse
import os

from pairviz_jax import runs

# batch.job.DEFAULT_SHARD_SIZE, written out so that ``--help`` imports no JAX (a test
# checks that the two agree).
DEFAULT_SHARD_SIZE = 65536

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--pairs", help="CSV/TSV of two images per line (files or DATASET:SPLIT:INDEX)"
    )
    src.add_argument("--images", help="a file of images, one per line, or DATASET:SPLIT[:N]")
    p.add_argument("--top-k", type=int, help="each of --images against its k nearest neighbours")
    p.add_argument("--gallery", help="neighbours for --top-k come from here (default: --images)")
    p.add_argument("--all-pairs", action="store_true", help="every pair of --images")
    p.add_argument("--out", required=True, help="output folder; the same command again resumes")
    p.add_argument("--root", help="folder relative image paths start from (default: the list's)")
    p.add_argument(
        "--convention",
        choices=("authors", "transpose"),
        default="authors",
        help="gamma' = R gamma (authors) or R^T gamma (maps sum to the score)",
    )
    p.add_argument(
        "--method",
        default="paper",
        help="explanation method: paper (one fold per image) or an explain.methods name "
        "(chefer, conservative, gradxinput, ig: one backward pass per pair and direction)",
    )
    p.add_argument(
        "--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="pairs per shard file"
    )
    p.add_argument("--png", type=int, default=0, help="also draw the first N pairs as PNGs")
    p.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    p.add_argument("--coordinator", help="host:port of process 0 (multi-host)")
    p.add_argument("--num-processes", type=int, help="processes (multi-host)")
    p.add_argument("--process-id", type=int, help="this process (multi-host)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def run(args: argparse.Namespace) -> list[str]:
    runs.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from pairviz_jax.batch.job import run_loaded

    m = runs.model_from_args(args)
    try:
        run_loaded(
            m,
            args.out,
            pairs_file=args.pairs,
            images=args.images,
            gallery=args.gallery,
            top_k=args.top_k,
            all_pairs=args.all_pairs,
            root=args.root,
            data_dir=args.data_dir,
            convention=args.convention,
            method=args.method,
            shard_size=args.shard_size,
            png_first=args.png,
        )
    except (ValueError, FileNotFoundError) as e:
        raise runs.InputError(str(e)) from None
    return [os.path.join(args.out, "manifest.json")]
