"""Figures of the paper from a checkpoint: ``python visualize.py SUBCOMMAND ... --workdir RUN``.

Subcommands (each writes a PNG, ``--pdf`` also a PDF, with the similarity scores on it):

  pair A B                      two images and their paired maps (Fig. 3/4)
  matrix IMG IMG [IMG ...]      the N x N grid of paired maps (Fig. 1)
  retrieve QUERY --gallery G    top-k results with maps, green when the label matches (Fig. 9);
                                ``--compare RUN_OR_WEIGHTS`` adds a second model's row
  class-map QUERY [...] --gallery G   class similarity maps (Section 4.2, Fig. 5)
  training QUERY --gallery G --workdir RUN   maps at several checkpoints (Fig. 6)
  rollout A B                   output-agnostic rollout beside the paired maps (Fig. 8)
  demo                          trains the demo model if needed, then renders every figure
  batch --pairs F | --images S (--top-k K | --all-pairs) --out DIR
                                maps of many pairs to resumable shard files (pairviz_jax.batch)
  evaluate [--photos] [--method M]  faithfulness of every explanation method (demo or photos)

An image is a file or ``DATASET:SPLIT:INDEX`` (``demo:test:0``); a gallery is a directory
(labels from its class sub-folders) or ``DATASET[:SPLIT]``. The model is a train.py run
(``--workdir DIR [--step N]``) or an imported weight file (``--weights FILE``).
``--style paper`` draws the authors' pictures (OpenCV JET on greyscale).

Bad input gives one line on stderr naming the file or option, and exit status 1 (2 for
command-line syntax). Everything else lives in ``pairviz_jax.plotting``; to add a
subcommand, write ``add_arguments(parser)`` and ``run(args) -> [paths]`` and list them in
``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

PROG = "visualize.py"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


# ----------------------------------------------------------------------------- shared options


def _model_options(p: argparse.ArgumentParser, *, weights: bool = True) -> None:
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a train.py run directory (checkpoints/<step>/)")
    if weights:
        src.add_argument("--weights", help="an imported weight file (.npz, .safetensors, ...)")
        g.add_argument("--image-size", type=int, help="input side for --weights (default: file's)")
        g.add_argument("--num-heads", type=int, help="ViT heads, if the file does not tell")
        g.add_argument(
            "--pool-type",
            choices=("gap", "tok"),
            help="ViT pooling for --weights; gap (mean of the patch tokens) gives paired maps "
            "for a class-token ViT",
        )
        g.add_argument(
            "--model-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="other model attribute for --weights, e.g. num_groups=8 (repeatable)",
        )
        g.add_argument(
            "--normalization",
            default="imagenet",
            help="input mean/std for --weights: imagenet, none, or a dataset name (sop, demo, ...)",
        )
    g.add_argument("--step", type=int, help="checkpoint step of --workdir (default: latest)")


def _render_options(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=os.path.join("out", f"{name}.png"), help="PNG to write")
    g.add_argument("--pdf", action="store_true", help="also write a PDF beside the PNG")
    g.add_argument("--style", choices=("modern", "paper"), default="modern")
    g.add_argument("--cmap", default="inferno", help="colormap of the modern style")
    g.add_argument("--alpha", type=float, default=0.6, help="map opacity (modern style)")
    g.add_argument("--dpi", type=int, default=100)
    g.add_argument(
        "--convention",
        choices=("authors", "transpose"),
        default="authors",
        help="gamma' = R gamma (authors) or R^T gamma (maps sum to the score)",
    )
    g.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    g.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def _gallery_options(p: argparse.ArgumentParser, top: int | None) -> None:
    p.add_argument("--gallery", required=True, help="a directory of images or DATASET[:SPLIT]")
    p.add_argument("--gallery-size", type=int, help="read at most this many gallery images")
    p.add_argument("--label", help="class label of a query file (default: its class folder)")
    if top is not None:
        p.add_argument("--top", type=int, default=top, help="results per row")


def _model(args, plotting):
    if args.workdir is not None:
        return plotting.load_run(args.workdir, args.step)
    if args.step is not None:
        raise plotting.InputError("--step applies to --workdir runs, not to --weights")
    known = plotting.parse_model_options(args.model_option)
    if args.num_heads is not None:
        known["num_heads"] = args.num_heads
    if args.pool_type is not None:
        known["pool_type"] = args.pool_type
    return plotting.load_weights(
        args.weights, image_size=args.image_size, normalization=args.normalization, **known
    )


def _style(args, plotting):
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise plotting.InputError(f"--cmap {args.cmap}: not a matplotlib colormap")
    if not 0.0 <= args.alpha <= 1.0:
        raise plotting.InputError(f"--alpha {args.alpha}: must be between 0 and 1")
    if args.dpi < 10:
        raise plotting.InputError(f"--dpi {args.dpi}: must be at least 10")
    return plotting.Style(args.style, cmap=args.cmap, alpha=args.alpha, dpi=args.dpi)


def _query_label(args, query_ref: str, gallery) -> str | None:
    """--label, else the query file's folder name when it is a class of the gallery."""
    if args.label is not None:
        return args.label
    parent = os.path.basename(os.path.dirname(os.path.abspath(query_ref)))
    return parent if parent in set(gallery.labels) else None


def _save(fig, args, plotting) -> list[str]:
    return plotting.save_figure(fig, args.out, pdf=args.pdf, dpi=args.dpi)


def _kw(args, plotting) -> dict:
    return dict(style=_style(args, plotting), convention=args.convention)


# ----------------------------------------------------------------------------- subcommands


def _pair_args(p):
    p.add_argument("a", help="image A (file or DATASET:SPLIT:INDEX)")
    p.add_argument("b", help="image B")


def _pair(args, plotting):
    kw = _kw(args, plotting)
    m = _model(args, plotting)
    a, b = (plotting.read_example(r, m, data_dir=args.data_dir) for r in (args.a, args.b))
    return _save(plotting.pair(m, a, b, **kw), args, plotting)


def _matrix_args(p):
    p.add_argument("images", nargs="+", help="two or more images")


def _matrix(args, plotting):
    if len(args.images) < 2:
        raise plotting.InputError("matrix: give at least 2 images")
    kw = _kw(args, plotting)
    m = _model(args, plotting)
    examples = [plotting.read_example(r, m, data_dir=args.data_dir) for r in args.images]
    return _save(plotting.matrix(m, examples, **kw), args, plotting)


def _query(args, plotting, ref, m, gallery):
    ex = plotting.read_example(ref, m, data_dir=args.data_dir)
    if ex.label is None:
        ex.label = _query_label(args, ref, gallery)
    return ex


def _retrieve_args(p):
    p.add_argument("query", help="the query image")
    _gallery_options(p, top=4)
    p.add_argument("--compare", help="a second model (run directory or weight file), second row")
    p.add_argument("--compare-step", type=int, help="checkpoint step of --compare (a run)")
    p.add_argument("--compare-image-size", type=int, help="input side of --compare (a file)")


def _retrieve(args, plotting):
    kw = _kw(args, plotting)
    models = [_model(args, plotting)]
    if args.compare is not None:
        if os.path.isdir(args.compare):
            models.append(plotting.load_run(args.compare, args.compare_step))
        elif os.path.exists(args.compare):
            normalization = getattr(args, "normalization", "imagenet")
            models.append(
                plotting.load_weights(
                    args.compare, image_size=args.compare_image_size, normalization=normalization
                )
            )
        else:
            raise plotting.InputError(f"--compare {args.compare}: no such file or directory")
    rows = []
    for m in models:
        gallery = plotting.open_gallery(
            args.gallery, m, limit=args.gallery_size, data_dir=args.data_dir
        )
        rows.append((m, _query(args, plotting, args.query, m, gallery), gallery))
    return _save(plotting.retrieve(rows, args.top, **kw), args, plotting)


def _class_map_args(p):
    p.add_argument("queries", nargs="+", help="query images")
    _gallery_options(p, top=None)


def _class_map(args, plotting):
    kw = _kw(args, plotting)
    m = _model(args, plotting)
    gallery = plotting.open_gallery(
        args.gallery, m, limit=args.gallery_size, data_dir=args.data_dir
    )
    queries = [_query(args, plotting, r, m, gallery) for r in args.queries]
    return _save(plotting.class_maps(m, queries, gallery, **kw), args, plotting)


def _training_args(p):
    p.add_argument("query", help="the query image")
    _gallery_options(p, top=3)
    p.add_argument("--steps", help="comma-separated checkpoint steps (default: up to --rows)")
    p.add_argument("--rows", type=int, default=4, help="checkpoints shown by default")


def _training(args, plotting):
    kw = _kw(args, plotting)
    steps = plotting.checkpoint_steps(args.workdir) if os.path.isdir(args.workdir) else []
    if args.steps:
        try:
            chosen = [int(s) for s in args.steps.split(",") if s.strip()]
        except ValueError:
            raise plotting.InputError(
                f"--steps {args.steps}: expected integers like 100,500"
            ) from None
        missing = [s for s in chosen if s not in steps]
        if steps and missing:
            raise plotting.InputError(
                f"--steps {args.steps}: no checkpoint {missing[0]} in {args.workdir}; "
                f"available: {', '.join(map(str, steps))}"
            )
    elif steps:
        if args.rows < 1:
            raise plotting.InputError(f"--rows {args.rows}: must be at least 1")
        picks = {round(i * (len(steps) - 1) / max(args.rows - 1, 1)) for i in range(args.rows)}
        chosen = [steps[i] for i in sorted(picks)]
    else:
        chosen = [None]  # load_run says what is missing
    rows, gallery = [], None
    for step in chosen:
        m = plotting.load_run(args.workdir, step)
        if gallery is None:
            gallery = plotting.open_gallery(
                args.gallery, m, limit=args.gallery_size, data_dir=args.data_dir
            )
        rows.append((m, _query(args, plotting, args.query, m, gallery), gallery))
    return _save(plotting.training(rows, args.top, **kw), args, plotting)


def _rollout_args(p):
    _pair_args(p)


def _rollout(args, plotting):
    kw = _kw(args, plotting)
    m = _model(args, plotting)
    a, b = (plotting.read_example(r, m, data_dir=args.data_dir) for r in (args.a, args.b))
    return _save(plotting.rollout(m, a, b, **kw), args, plotting)


def _demo_args(p):
    p.add_argument("--workdir", default=os.path.join("workdirs", "demo"), help="the demo run")
    p.add_argument("--config", default=os.path.join("configs", "demo.py"), help="training config")
    p.add_argument("--out", default=os.path.join("out", "demo"), help="folder for the figures")
    p.add_argument("--pdf", action="store_true", help="also write PDFs")
    p.add_argument("--gallery-size", type=int, help="gallery: the first N test images")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def _demo(args, plotting):
    from pairviz_jax.plotting import demo

    return demo.run(
        args.workdir, args.out, config=args.config, pdf=args.pdf, gallery_size=args.gallery_size
    )


# ----------------------------------------------------------------------------- batch, evaluate


def _batch_args(p):
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
    p.add_argument("--convention", choices=("authors", "transpose"), default="authors")
    p.add_argument("--shard-size", type=int, default=16384, help="pairs per shard file")
    p.add_argument("--png", type=int, default=0, help="also draw the first N pairs as PNGs")
    p.add_argument("--data-dir", help="TFDS data directory of prepared datasets")
    p.add_argument("--coordinator", help="host:port of process 0 (multi-host)")
    p.add_argument("--num-processes", type=int, help="processes (multi-host)")
    p.add_argument("--process-id", type=int, help="this process (multi-host)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def _batch(args, plotting):
    from pairviz_jax import batch
    from pairviz_jax.train import sharding

    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    m = _model(args, plotting)
    try:
        batch.run_loaded(
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
            shard_size=args.shard_size,
            png_first=args.png,
        )
    except (ValueError, FileNotFoundError) as e:
        raise plotting.InputError(str(e)) from None
    return [os.path.join(args.out, "manifest.json")]


def _evaluate_args(p):
    p.add_argument(
        "--photos", action="store_true", help="real-photo copy-paste pairs (both halves)"
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


def _evaluate(args, plotting):
    from pairviz_jax.evaluate import commands

    m = _model(args, plotting)
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
        )
    except (ValueError, ImportError) as e:
        raise plotting.InputError(str(e)) from None
    print(text)
    return paths


class Command(NamedTuple):
    """A subcommand: ``add_arguments(parser)`` and ``run(args, plotting) -> written paths``.

    ``options`` adds shared option groups: ``model`` (``--workdir``/``--weights``), ``run``
    (``--workdir`` only) and ``render`` (``--out``, ``--style``, ...).
    """

    help: str
    add_arguments: Callable
    run: Callable
    options: tuple[str, ...] = ("model", "render")


COMMANDS: dict[str, Command] = {
    "pair": Command("paired maps of two images (Fig. 3/4)", _pair_args, _pair),
    "matrix": Command("N x N grid of paired maps (Fig. 1)", _matrix_args, _matrix),
    "retrieve": Command("top-k retrieval with maps (Fig. 9)", _retrieve_args, _retrieve),
    "class-map": Command("class similarity maps (Fig. 5)", _class_map_args, _class_map),
    "training": Command(
        "maps across checkpoints of a run (Fig. 6)", _training_args, _training, ("run", "render")
    ),
    "rollout": Command("rollout beside paired maps (Fig. 8)", _rollout_args, _rollout),
    "demo": Command("train the demo model if needed, render every figure", _demo_args, _demo, ()),
    "batch": Command("maps of many pairs to shard files", _batch_args, _batch, ("model",)),
    "evaluate": Command(
        "faithfulness table and curves (demo or photos)", _evaluate_args, _evaluate, ("model",)
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, (help_text, add_arguments, run, options) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        add_arguments(p)
        if "model" in options:
            _model_options(p)
        if "run" in options:
            _model_options(p, weights=False)
        if "render" in options:
            _render_options(p, name.replace("-", "_"))
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, renders, prints the files written; returns the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from pairviz_jax import plotting

    try:
        written = args.run(args, plotting)
    except plotting.InputError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        msg = " ".join(str(e).split())[:300]
        print(
            f"{PROG}: error: {args.command} failed: {type(e).__name__}: {msg} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
