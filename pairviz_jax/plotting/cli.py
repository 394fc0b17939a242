"""``visualize.py``'s subcommands: each is ``add_arguments(parser)`` and ``run(args)``.

``visualize.py`` keeps the one table of subcommands (``COMMANDS``, of :class:`Command`) and
the dispatch; the
options and the work of each figure subcommand live here (``batch``: ``pairviz_jax.batch.cli``,
``demo``: ``pairviz_jax.plotting.demo``). A subcommand's ``options`` ask the dispatcher
for shared option groups: ``model`` (``--workdir``/``--weights``, ``runs.add_model_arguments``),
``run`` (``--workdir`` only, no ``--step``) and ``render`` (``--out``, ``--style``, ...).
``run(args)`` returns the paths it wrote and raises ``runs.InputError`` (one line) on bad
input.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from typing import NamedTuple

from pairviz_jax import plotting, runs  # plotting: lazy attributes (fast --help)
from pairviz_jax.argcheck import DEFAULT_METHOD
from pairviz_jax.runs.errors import InputError

__all__ = [
    "Command",
    "HelpFormatter",
    "add_render_arguments",
    "pick_steps",
    "resolve_method",
    "style_from_args",
]


class Command(NamedTuple):
    """A subcommand: ``add_arguments(parser)`` and ``run(args) -> written paths``.

    ``options`` adds shared option groups: ``model`` (``--workdir``/``--weights``), ``run``
    (``--workdir`` only) and ``render`` (``--out``, ``--style``, ...).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], list[str]]
    options: tuple[str, ...] = ("model", "render")


class HelpFormatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after every option that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and default not in (None, False, [], argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


# ----------------------------------------------------------------------------- shared options


def add_render_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """``--out``, ``--pdf``, ``--style``, ``--cmap``, ``--alpha``, ``--dpi``, ``--convention``."""
    g = p.add_argument_group("output")
    g.add_argument("--out", default=os.path.join("out", f"{name}.png"), help="PNG to write")
    g.add_argument("--pdf", action="store_true", help="also write a PDF beside the PNG")
    g.add_argument(
        "--style",
        choices=("modern", "paper"),
        default="modern",
        help="modern: a perceptual colormap over greyscale, one scale per figure with a "
        "colour bar; paper: the authors' pictures (per-map min-max, OpenCV's JET)",
    )
    g.add_argument("--cmap", default="inferno", help="matplotlib colormap of the modern style")
    g.add_argument("--alpha", type=float, default=0.6, help="map opacity (modern style)")
    g.add_argument("--dpi", type=int, default=100, help="resolution of the PNG, dots per inch")
    g.add_argument(
        "--convention",
        choices=("authors", "transpose"),
        default="authors",
        help="gamma' = R gamma (authors) or R^T gamma (maps sum to the score); paper method",
    )
    g.add_argument(
        "--method",
        choices=_method_names(),
        help=f"explanation method: the paper's (eq. 1-6) or one of explain.methods (docs/trust.md, "
        f"'Which method answers the paired question?'); default {DEFAULT_METHOD} (no method beat "
        f"it on the held-out swap test by 2 standard errors), paper with --style paper or "
        f"--convention transpose",
    )
    g.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    g.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


# explain.methods.METHODS, written out so that building the parser (``--help``) imports no
# JAX; a test checks that the two agree.
METHOD_NAMES = ("paper", "chefer", "conservative", "gradxinput", "ig")


def _method_names() -> tuple[str, ...]:
    return METHOD_NAMES


def _gallery_options(p: argparse.ArgumentParser, top: int | None) -> None:
    p.add_argument("--gallery", required=True, help="a directory of images or DATASET[:SPLIT]")
    p.add_argument("--gallery-size", type=int, help="read at most this many gallery images")
    p.add_argument("--label", help="class label of a query file (default: its class folder)")
    if top is not None:
        p.add_argument("--top", type=int, default=top, help="results per row")


def style_from_args(args: argparse.Namespace):
    """The ``plotting.Style`` of the render options, each value checked."""
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise InputError(f"--cmap {args.cmap}: not a matplotlib colormap")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha {args.alpha}: must be between 0 and 1")
    if args.dpi < 10:
        raise InputError(f"--dpi {args.dpi}: must be at least 10")
    return plotting.Style(args.style, cmap=args.cmap, alpha=args.alpha, dpi=args.dpi)


def query_label(args: argparse.Namespace, query_ref: str, gallery) -> str | None:
    """--label, else the query file's folder name when it is a class of the gallery."""
    if args.label is not None:
        return args.label
    parent = os.path.basename(os.path.dirname(os.path.abspath(query_ref)))
    return parent if parent in set(gallery.labels) else None


def _save(fig, args) -> list[str]:
    return plotting.save_figure(fig, args.out, pdf=args.pdf, dpi=args.dpi)


def resolve_method(args: argparse.Namespace) -> str:
    """``--method``, else ``DEFAULT_METHOD``, except that ``--style paper`` and ``--convention
    transpose`` (the paper's figures and its other convention) mean the paper's method."""
    if args.method is None:
        paper = args.style == "paper" or args.convention != "authors"
        args.method = "paper" if paper else DEFAULT_METHOD
    return args.method


def _kw(args) -> dict:
    resolve_method(args)
    if args.method != "paper" and args.convention != "authors":
        raise InputError(f"--convention applies to --method paper, not to --method {args.method}")
    import dataclasses

    from pairviz_jax.plotting.figures import map_quantity

    style = dataclasses.replace(
        style_from_args(args), map_label=map_quantity(args.method, args.convention)
    )
    return dict(style=style, convention=args.convention, method=args.method)


def _read(args, ref, m):
    return plotting.read_example(ref, m, data_dir=args.data_dir)


def _query(args, ref, m, gallery):
    ex = _read(args, ref, m)
    if ex.label is None:
        ex.label = query_label(args, ref, gallery)
    return ex


def _gallery(args, m):
    return plotting.open_gallery(args.gallery, m, limit=args.gallery_size, data_dir=args.data_dir)


# ----------------------------------------------------------------------------- subcommands


def pair_arguments(p):
    p.add_argument("a", help="image A (file or DATASET:SPLIT:INDEX)")
    p.add_argument("b", help="image B")


def pair(args) -> list[str]:
    kw = _kw(args)
    m = runs.model_from_args(args)
    a, b = (_read(args, r, m) for r in (args.a, args.b))
    return _save(plotting.pair(m, a, b, **kw), args)


def matrix_arguments(p):
    p.add_argument("images", nargs="+", help="two or more images")


def matrix(args) -> list[str]:
    if len(args.images) < 2:
        raise InputError("matrix: give at least 2 images")
    kw = _kw(args)
    m = runs.model_from_args(args)
    examples = [_read(args, r, m) for r in args.images]
    return _save(plotting.matrix(m, examples, **kw), args)


def retrieve_arguments(p):
    p.add_argument("query", help="the query image")
    _gallery_options(p, top=4)
    runs.add_model_arguments(p, prefix="compare")


def retrieve(args) -> list[str]:
    kw = _kw(args)
    models = [runs.model_from_args(args)]
    other = runs.model_from_args(args, prefix="compare")
    if other is not None:
        models.append(other)
    rows = []
    for m in models:
        gallery = _gallery(args, m)
        rows.append((m, _query(args, args.query, m, gallery), gallery))
    return _save(plotting.retrieve(rows, args.top, **kw), args)


def class_map_arguments(p):
    p.add_argument("queries", nargs="+", help="query images")
    _gallery_options(p, top=None)


def class_map(args) -> list[str]:
    kw = _kw(args)
    m = runs.model_from_args(args)
    gallery = _gallery(args, m)
    queries = [_query(args, r, m, gallery) for r in args.queries]
    return _save(plotting.class_maps(m, queries, gallery, **kw), args)


def training_arguments(p):
    p.add_argument("query", help="the query image")
    _gallery_options(p, top=3)
    p.add_argument("--steps", help="comma-separated checkpoint steps (default: up to --rows)")
    p.add_argument("--rows", type=int, default=4, help="checkpoints shown by default")


def pick_steps(steps: list[int], rows: int) -> list[int]:
    """``rows`` checkpoints spread evenly over ``steps``, first and last included."""
    if rows < 1:
        raise InputError(f"--rows {rows}: must be at least 1")
    picks = {round(i * (len(steps) - 1) / max(rows - 1, 1)) for i in range(rows)}
    return [steps[i] for i in sorted(picks)]


def training(args) -> list[str]:
    kw = _kw(args)
    exists = os.path.isdir(args.workdir) or runs.is_exported(args.workdir)
    steps = runs.checkpoint_steps(args.workdir) if exists else []
    if args.steps:
        try:
            chosen = [int(s) for s in args.steps.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--steps {args.steps}: expected integers like 100,500") from None
        missing = [s for s in chosen if s not in steps]
        if steps and missing:
            raise InputError(
                f"--steps {args.steps}: no checkpoint {missing[0]} in {args.workdir}; "
                f"available: {', '.join(map(str, steps))}"
            )
    elif steps:
        chosen = pick_steps(steps, args.rows)
    else:
        chosen = [None]  # load_run says what is missing
    rows, gallery = [], None
    for step in chosen:
        m = runs.load_run(args.workdir, step, step_flag="--steps")
        if gallery is None:
            gallery = _gallery(args, m)
        rows.append((m, _query(args, args.query, m, gallery), gallery))
    return _save(plotting.training(rows, args.top, **kw), args)


def rollout_arguments(p):
    pair_arguments(p)


def rollout(args) -> list[str]:
    kw = _kw(args)
    m = runs.model_from_args(args)
    a, b = (_read(args, r, m) for r in (args.a, args.b))
    return _save(plotting.rollout(m, a, b, **kw), args)


def evaluate_arguments(p):
    p.add_argument(
        "--photos", action="store_true", help="real-photo copy-paste pairs (both halves)"
    )
    p.add_argument(
        "--swap",
        nargs="?",
        const="a",
        choices=("a", "b"),
        help="the swap test on real-photo triples of half a (development) or b (held out)",
    )
    p.add_argument("--pairs", type=int, help="pairs (demo: 128; photos: per half, 100)")
    p.add_argument("--steps", type=int, help="points of the curves, minus one (demo 16, photos 8)")
    p.add_argument("--baseline", choices=("mean", "blur"), default="mean", help="deleted patches")
    p.add_argument(
        "--distractor",
        action="store_true",
        help="a second object shared with nothing (is the map about the pair?)",
    )
    p.add_argument(
        "--method",
        action="append",
        help="maps to measure, e.g. chefer,conservative (paper, all; baselines always added)",
    )
    p.add_argument(
        "--option", action="append", default=[], help="METHOD.KEY=VALUE, e.g. ig.steps=32"
    )
    p.add_argument("--curve-pairs", type=int, help="deletion/insertion on the first N pairs only")
    p.add_argument(
        "--cache", help="photos: folder of finished chunks (resume); default beside --out"
    )
    p.add_argument("--figure", help="also draw every method on two photo pairs to this PNG")
    p.add_argument("--out", default=os.path.join("out", "evaluate.png"), help="curves PNG")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def evaluate(args) -> list[str]:
    import sys
    import time

    t0 = time.perf_counter()
    say = functools.partial(print, file=sys.stderr, flush=True)
    from pairviz_jax.evaluate import commands

    try:  # the method names and options, before the model is loaded
        commands.parse_methods(args.method, ())
        commands.parse_options(args.option)
    except ValueError as e:
        raise InputError(str(e)) from None
    say(f"evaluate: loading the model ({time.perf_counter() - t0:.1f} s; a line follows each step)")
    m = runs.model_from_args(args)
    say(f"evaluate: model {m.label} loaded ({time.perf_counter() - t0:.1f} s)")
    try:
        text, paths = commands.run(
            m,
            out=args.out,
            photos=args.photos,
            pairs=args.pairs,
            steps=args.steps,
            baseline=args.baseline,
            distractor=args.distractor,
            methods=args.method,
            options=args.option,
            curve_pairs=args.curve_pairs,
            cache=args.cache,
            figure=args.figure,
            swap=args.swap,
        )
    except (ValueError, ImportError) as e:
        raise InputError(str(e)) from None
    print(text)
    return paths
