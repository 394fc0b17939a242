"""``visualize.py explore`` and ``visualize.py report``: flags and what they run.

Each subcommand is ``add_arguments(parser)`` and ``run(args) -> [written paths]``
(``COMMANDS``); ``visualize.py`` registers them. Bad input raises
``runs.InputError`` with one line naming the file or option. This module imports
only argparse at import time, so ``visualize.py --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import NamedTuple

from pairviz_jax.argcheck import DEFAULT_METHOD


class Subcommand(NamedTuple):
    """``options``: the shared option groups of visualize.py it takes (``"model"``)."""

    help: str
    add_arguments: object
    run: object
    options: tuple[str, ...]


def load_model(args):
    """The model of ``--workdir [--step]`` or ``--weights ...`` (the run loader's options)."""
    from pairviz_jax import runs

    return runs.model_from_args(args)


# ----------------------------------------------------------------------------- explore


def explore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="image A (file or DATASET:SPLIT:INDEX)")
    p.add_argument("b", help="image B")
    p.add_argument("--out", default=os.path.join("out", "explore.html"), help="HTML file to write")
    p.add_argument(
        "--convention",
        choices=("transpose", "authors"),
        default="transpose",
        help="M = R^T (default: C sums to the score, its row/column sums are the paired maps) "
        "or M = R (the paper's figures; a remainder completes the sums)",
    )
    p.add_argument("--start-layer", type=int, default=0, help="first block of the rollout")
    p.add_argument(
        "--head-fusion", choices=("mean", "max", "min"), default="mean", help="attention heads"
    )
    p.add_argument(
        "--method",
        type=_method_with_c,
        help="paper: C through the rollout (and P); bilrp: also the second-order C through "
        "the whole network, shown first (E backward passes per image); default "
        f"{DEFAULT_METHOD} (the one default, when it has a C; else paper)",
    )
    p.add_argument("--display", type=int, default=448, help="image size on the page (px)")
    p.add_argument("--cmap", default="inferno", help="matplotlib colormap of the heatmaps")
    p.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def _source(ref: str):
    """The full-resolution original of a file reference (None for dataset examples)."""
    from pairviz_jax import plotting

    return plotting.load_image(ref) if os.path.isfile(ref) else None


def resolve_method(args) -> str:
    """``--method``, else ``DEFAULT_METHOD`` (the one default of every command) when it has
    a correspondence C, else ``"paper"``."""
    from pairviz_jax.viewer import _corr

    if args.method is not None:
        return args.method
    return DEFAULT_METHOD if DEFAULT_METHOD in _corr.WITH_C else "paper"


def _method_with_c(name: str) -> str:
    """``--method``: a method that has a correspondence C (argparse: exit 2 otherwise)."""
    from pairviz_jax.viewer import _corr

    why = _corr.problem(name)
    if why is not None:
        raise argparse.ArgumentTypeError(f"{name}: {why.split(': ', 1)[1]}")
    return name


def _usage(args, message: str) -> None:
    """A usage error found after parsing: one line, exit status 2 (as argparse's), named by the
    program that ran (``visualize.py`` or the installed ``pairviz``)."""
    print(
        f"{getattr(args, 'prog', 'visualize.py')} {args.command}: error: {message}", file=sys.stderr
    )
    raise SystemExit(2)


def explore(args, _plotting=None) -> list[str]:
    from pairviz_jax import plotting
    from pairviz_jax.viewer import _corr
    from pairviz_jax.viewer import explore as page

    if not 64 <= args.display <= 4096:
        raise plotting.InputError(f"--display {args.display}: expected 64 to 4096 pixels")
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise plotting.InputError(f"--cmap {args.cmap}: not a matplotlib colormap")
    if not args.out.lower().endswith((".html", ".htm")):
        raise plotting.InputError(f"--out {args.out}: expected an .html file")
    method = resolve_method(args)
    m = load_model(args)
    why = _corr.problem(method, m.model)
    if why is not None:
        _usage(args, why)
    depth = getattr(m.model, "depth", None)
    if depth is not None and not 0 <= args.start_layer < depth:
        raise plotting.InputError(f"--start-layer {args.start_layer}: the model has {depth} blocks")
    a, b = (plotting.read_example(r, m, data_dir=args.data_dir) for r in (args.a, args.b))
    data = page.explore_data(
        m,
        a,
        b,
        source_a=_source(args.a),
        source_b=_source(args.b),
        convention=args.convention,
        start_layer=args.start_layer,
        head_fusion=args.head_fusion,
        display=args.display,
        cmap=args.cmap,
        method=method,
    )
    return [page.write_explore(args.out, data)]


# ----------------------------------------------------------------------------- report


def report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="output folder of a finished visualize.py batch job")
    p.add_argument("--dest", help="folder for the report (default: JOB/report)")
    p.add_argument("--per-page", type=int, default=48, help="pairs per page")
    p.add_argument(
        "--per-query", type=int, help="show only the best N results of each query (default: all)"
    )
    p.add_argument(
        "--order",
        choices=("query", "score"),
        default="query",
        help="pairs grouped by query (image A), best first; or all pairs by score",
    )
    p.add_argument("--thumb", type=int, default=128, help="thumbnail size on the page (px)")
    p.add_argument("--cmap", default="inferno", help="matplotlib colormap of the maps")
    p.add_argument("--partial", action="store_true", help="report an unfinished job's shards")
    p.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument(
        "--method",
        type=_method_with_c,
        help="whose correspondence C the maps and 'what this patch matches' show: paper "
        "(rollout C from the job's own folds, no model needed) or bilrp (second-order C, "
        "BiLRP: needs the job's model, E backward passes per image); default "
        f"{DEFAULT_METHOD} (the one default, when it has a C; else paper)",
    )
    p.add_argument(
        "--matches",
        type=int,
        default=480,
        help="the first N pairs carry C (N x N floats per pair: about 11 kB for an 8 x 8 "
        "grid, 175 kB for 16 x 16); with a method other than the job's, only these are "
        "reported (default 480, 10 pages of 48)",
    )
    from pairviz_jax import runs

    runs.add_model_arguments(p)  # the job's model: only --method bilrp needs it
    for group in p._mutually_exclusive_groups:
        group.required = False


def report(args, _plotting=None) -> list[str]:
    from pairviz_jax import plotting
    from pairviz_jax.viewer import _corr
    from pairviz_jax.viewer import report as rep

    checks = [
        ("--per-page", args.per_page, 1, 10000),
        ("--thumb", args.thumb, 16, 1024),
    ]
    if args.per_query is not None:
        checks.append(("--per-query", args.per_query, 1, 10**9))
    for flag, value, lo, hi in checks:
        if not lo <= value <= hi:
            raise plotting.InputError(f"{flag} {value}: expected {lo} to {hi}")
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise plotting.InputError(f"--cmap {args.cmap}: not a matplotlib colormap")
    if args.matches < 0:
        raise plotting.InputError(f"--matches {args.matches}: expected a number of pairs >= 0")
    method = resolve_method(args)
    model_given = args.workdir is not None or args.weights is not None
    if method != "paper" and not model_given:
        _usage(
            args,
            f"--method {method}: needs the job's model (--workdir RUN or --weights FILE) "
            "to fold its images",
        )
    loaded = load_model(args) if method != "paper" else None
    why = None if loaded is None else _corr.problem(method, loaded.model)
    if why is not None:
        _usage(args, why)
    t0 = time.perf_counter()
    try:
        index = rep.write_report(
            args.job,
            args.dest,
            per_page=args.per_page,
            per_query=args.per_query,
            order=args.order,
            thumb=args.thumb,
            cmap=args.cmap,
            partial=args.partial,
            data_dir=args.data_dir,
            progress=sys.stderr,
            method=method,
            loaded=loaded,
            matches=args.matches,
        )
    except (ValueError, FileNotFoundError) as e:
        raise plotting.InputError(" ".join(str(e).split())) from None
    print(f"report written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return [index]


COMMANDS: dict[str, Subcommand] = {
    "explore": Subcommand(
        "one pair in the browser: what each patch matches (HTML)",
        explore_arguments,
        explore,
        ("model",),
    ),
    "report": Subcommand("a finished batch job as an HTML gallery", report_arguments, report, ()),
}
