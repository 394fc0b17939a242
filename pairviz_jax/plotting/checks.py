"""``visualize.py``'s checks of every subcommand's values, run before any model is loaded.

:func:`check_args` looks at the options a subcommand has (``--out``, ``--workdir``,
``--image-size``, ...) and refuses a wrong value with one line naming the option
(``runs.InputError``), without importing JAX: a mistake costs a fraction of a second,
not the minutes of the computation it would otherwise fail after.
"""

from __future__ import annotations

import argparse
import os
import re

from pairviz_jax import argcheck as check
from pairviz_jax.runs.errors import InputError
from pairviz_jax.runs.options import ModelSpec

__all__ = ["DEMO_RUN", "check_args"]

# The embedded demo model: a run every fresh clone has (``visualize.py demo`` draws from it).
DEMO_RUN = os.path.join("pairviz_jax", "plotting", "assets", "demo_run.npz")
DEMO_CONFIG = os.path.join("configs", "demo.py")  # plotting.demo.CONFIG, without its imports

# Where each subcommand writes: one figure file, an HTML file or a folder.
FIGURE_COMMANDS = ("pair", "matrix", "retrieve", "class-map", "training", "rollout", "evaluate")
_AT_LEAST_ONE = {
    "image_size": "--image-size",
    "compare_image_size": "--compare-image-size",
    "num_heads": "--num-heads",
    "compare_num_heads": "--compare-num-heads",
    "top": "--top",
    "gallery_size": "--gallery-size",
    "rows": "--rows",
    "top_k": "--top-k",
    "shard_size": "--shard-size",
    "num_processes": "--num-processes",
    "per_query": "--per-query",
}
_AT_LEAST_ZERO = {
    "step": "--step",
    "compare_step": "--compare-step",
    "png": "--png",
    "process_id": "--process-id",
    "start_layer": "--start-layer",
}


def _numbers(args: argparse.Namespace) -> None:
    for dest, flag in _AT_LEAST_ONE.items():
        check.at_least(flag, getattr(args, dest, None), 1, "a whole number >= 1")
    for dest, flag in _AT_LEAST_ZERO.items():
        check.at_least(flag, getattr(args, dest, None), 0, "a whole number >= 0")
    if getattr(args, "alpha", None) is not None:
        check.between("--alpha", args.alpha, 0.0, 1.0)
    check.at_least("--dpi", getattr(args, "dpi", None), 10, "at least 10 dots per inch")
    if args.command == "evaluate":
        check.at_least("--pairs", args.pairs, 1, "a number of pairs >= 1")
        check.at_least("--steps", args.steps, 1, "a number of deletion steps >= 1")
        check.at_least("--curve-pairs", args.curve_pairs, 0, "a number of pairs >= 0")
    if args.command == "report":
        check.between("--per-page", args.per_page, 1, 10000)
        check.between("--thumb", args.thumb, 16, 1024)
    if args.command == "explore":
        check.between("--display", args.display, 64, 4096)


def _model(args: argparse.Namespace) -> None:
    workdir = getattr(args, "workdir", None)
    if args.command == "demo":
        check.run_source("--workdir", workdir, may_be_new=True)
    elif workdir is not None:
        check.run_source("--workdir", workdir)
    check.existing("--weights", getattr(args, "weights", None))
    check.existing("--compare", getattr(args, "compare", None))


def _outputs(args: argparse.Namespace) -> None:
    out = getattr(args, "out", None)
    if args.command in FIGURE_COMMANDS:
        check.new_file("--out", out)
    elif args.command == "explore":
        if not out.lower().endswith((".html", ".htm")):
            raise InputError(f"--out {out}: expected an .html file")
        check.new_file("--out", out, (".html", ".htm"))
    elif args.command in ("batch", "demo"):
        check.new_dir("--out", out)
    if args.command == "evaluate":
        if args.figure is not None:
            check.new_file("--figure", args.figure)
        if args.cache is not None:
            check.new_dir("--cache", args.cache)
    if args.command == "report":
        if not os.path.isdir(args.job):
            what = "no such folder" if not os.path.exists(args.job) else "not a folder"
            raise InputError(
                f"report {args.job}: {what}; expected a visualize.py batch --out folder"
            )
        if args.dest is not None:
            check.new_dir("--dest", args.dest)
    if args.command == "batch":
        check.existing("--pairs", args.pairs, "pairs file")
        if args.pairs is not None and os.path.isdir(args.pairs):
            raise InputError(f"--pairs {args.pairs}: a folder; expected a CSV/TSV file of pairs")
        if args.top_k is not None and args.all_pairs:
            raise InputError("--top-k and --all-pairs: give one of them")
        if args.images is not None and args.top_k is None and not args.all_pairs:
            raise InputError(f"--images {args.images}: also give --top-k K or --all-pairs")
        if args.pairs is not None and (args.top_k is not None or args.all_pairs):
            raise InputError("--top-k/--all-pairs go with --images, not with --pairs")


_EXAMPLE_REF = re.compile(r"[A-Za-z_]\w*:[A-Za-z_]\w*:\d+")
_GALLERY_REF = re.compile(r"[A-Za-z_]\w*(:[A-Za-z_]\w*)?")


def _images(args: argparse.Namespace) -> None:
    refs = [getattr(args, name, None) for name in ("a", "b", "query")]
    refs += list(getattr(args, "images", None) or []) if args.command == "matrix" else []
    refs += list(getattr(args, "queries", None) or [])
    for ref in refs:
        if ref is not None and not os.path.exists(ref) and not _EXAMPLE_REF.fullmatch(ref):
            raise InputError(
                f"{ref}: no such file; expected an image file or DATASET:SPLIT:INDEX "
                "(e.g. demo:test:0)"
            )
    gallery = getattr(args, "gallery", None)
    if gallery is not None and args.command != "batch":
        if not os.path.exists(gallery) and not _GALLERY_REF.fullmatch(gallery):
            raise InputError(
                f"--gallery {gallery}: no such folder; expected a folder of images or "
                "DATASET[:SPLIT] (e.g. demo:test)"
            )
        if os.path.isfile(gallery):
            raise InputError(f"--gallery {gallery}: a file; expected a folder of images")


def _compare(args: argparse.Namespace) -> None:
    if not hasattr(args, "compare") or args.compare is not None:
        return
    spec = ModelSpec.from_args(args, "compare")
    given = ([spec.option("step")] if spec.step is not None else []) + spec.file_options()
    if given:
        raise InputError(f"{given[0]} needs --compare (the second model)")


def _subcommand(args: argparse.Namespace) -> None:
    from pairviz_jax.plotting.cli import METHOD_NAMES

    if args.command == "batch" and args.method is not None and args.method not in METHOD_NAMES:
        raise InputError(
            f"--method {args.method}: unknown method {args.method!r}; expected one of "
            f"{', '.join(METHOD_NAMES)}"
        )
    if args.command == "demo":
        # The default config matters only to train (an installed package has no configs/:
        # the embedded model is drawn as shipped).
        if args.train or args.config != DEMO_CONFIG:
            check.existing("--config", args.config.partition(":")[0], "config file")
        if args.export is not None:
            check.new_file("--export", args.export, (".npz",))
    if args.command == "report" and args.dest is None:
        check.new_dir("report (its report/ folder)", os.path.join(args.job, "report"))
    if args.command == "report" and not args.partial:
        if not os.path.exists(os.path.join(args.job, "manifest.json")):
            started = os.path.exists(os.path.join(args.job, "job.json"))
            raise InputError(
                f"report {args.job}: "
                + (
                    "the batch job has not finished (no manifest.json); add --partial to "
                    "report the shards written so far, or rerun the batch command to finish it"
                    if started
                    else "no batch job here (no job.json, no manifest.json); expected a "
                    "visualize.py batch --out folder"
                )
            )


def check_args(args: argparse.Namespace) -> None:
    """Refuses a wrong value of ``args`` (one ``InputError`` line) before any work."""
    _numbers(args)
    _model(args)
    _compare(args)
    _outputs(args)
    _images(args)
    _subcommand(args)
