"""``visualize.py batch``: its options and its run (the dispatcher adds the model options)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from pairviz_jax import runs
from pairviz_jax.argcheck import DEFAULT_METHOD
from pairviz_jax.batch.claims import DEFAULT_LEASE

# batch.options' defaults, written out so that ``--help`` imports no JAX (a test checks
# that they agree).
DEFAULT_SHARD_SIZE = 65536
DEFAULT_DEVICE_BUDGET = 1 << 30

__all__ = ["add_arguments", "resolve_method", "run"]


def resolve_method(args: argparse.Namespace) -> str:
    """``--method``, else ``DEFAULT_METHOD``; ``--convention transpose`` means the paper's."""
    if args.method is None:
        args.method = "paper" if args.convention != "authors" else DEFAULT_METHOD
    return args.method


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--pairs", help="CSV/TSV of two images per line (files or DATASET:SPLIT:INDEX)"
    )
    src.add_argument("--images", help="a file of images, one per line, or DATASET:SPLIT[:N]")
    p.add_argument("--top-k", type=int, help="each of --images against its k nearest neighbours")
    p.add_argument("--gallery", help="neighbours for --top-k come from here (default: --images)")
    p.add_argument("--all-pairs", action="store_true", help="every pair of --images")
    p.add_argument(
        "--out",
        required=True,
        help="output folder; the same command again resumes, and several at once (on "
        "machines sharing it) split the work",
    )
    p.add_argument("--root", help="folder relative image paths start from (default: the list's)")
    p.add_argument(
        "--convention",
        choices=("authors", "transpose"),
        default="authors",
        help="gamma' = R gamma (authors) or R^T gamma (maps sum to the score)",
    )
    p.add_argument(
        "--method",
        help="explanation method: paper (one fold per image) or an explain.methods name "
        "(chefer, conservative, gradxinput, ig: one backward pass per pair and direction); "
        f"default {DEFAULT_METHOD}, paper with --convention transpose",
    )
    p.add_argument(
        "--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="pairs per shard file"
    )
    p.add_argument("--png", type=int, default=0, help="also draw the first N pairs as PNGs")
    p.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    p.add_argument(
        "--allow-skips",
        action="store_true",
        help="exit 0 although pairs were skipped (unreadable images; else exit 1)",
    )
    p.add_argument(
        "--device-budget-mb",
        type=float,
        default=DEFAULT_DEVICE_BUDGET / 2**20,
        help="MB of folded images kept on the devices; a larger gallery streams from --out",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=DEFAULT_LEASE,
        help="seconds without a heartbeat before a dead worker's shard is taken over",
    )
    p.add_argument(
        "--coordinator",
        help="accepted for older scripts: every process is an independent worker (no "
        "collectives); start the same command anywhere the --out folder is shared",
    )
    p.add_argument("--num-processes", type=int, help="as --coordinator (ignored)")
    p.add_argument("--process-id", type=int, help="names this worker in its shards")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def run(args: argparse.Namespace) -> list[str]:
    from pairviz_jax.batch.job import run_loaded

    if args.coordinator or args.num_processes:
        sys.stderr.write(
            "note: batch needs no --coordinator/--num-processes: every process is an "
            "independent worker of the job in --out (no collectives)\n"
        )
    m = runs.model_from_args(args)
    label = f"{socket.gethostname()}:{os.getpid()}"
    if args.process_id is not None:
        label += f":process {args.process_id}"
    try:
        summary = run_loaded(
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
            method=resolve_method(args),
            shard_size=args.shard_size,
            png_first=args.png,
            device_budget=int(args.device_budget_mb * 2**20),
            lease=args.lease,
            worker_label=label,
        )
    except (ValueError, FileNotFoundError) as e:
        raise runs.InputError(str(e)) from None
    if summary["skipped"]:
        line = skipped_line(args.out, summary)
        if not args.allow_skips:
            raise runs.InputError(f"{line}; --allow-skips accepts them")
        sys.stderr.write(f"warning: {line} (accepted: --allow-skips)\n")
    return [os.path.join(args.out, "manifest.json")]


def skipped_line(out: str, summary: dict) -> str:
    """How many pairs were skipped and why, with the first unreadable image's reason."""
    path = os.path.join(out, "unreadable.txt")
    first = ""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().strip().replace("\t", ": ", 1)
    except OSError:
        pass
    line = (
        f"{summary['skipped']:,} of {summary['pairs']:,} pairs skipped: "
        f"{summary['unreadable']:,} unreadable images listed in {path}"
    )
    return f"{line} (first: {first})" if first else line
