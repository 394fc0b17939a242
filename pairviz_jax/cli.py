"""Figures of the paper from a checkpoint: pairviz SUBCOMMAND ... (or visualize.py SUBCOMMAND).

Subcommands (each writes a PNG, ``--pdf`` also a PDF, with the similarity scores and the
model's checkpoint step on it):

  pair A B                      two images and their paired maps (Fig. 3/4)
  matrix IMG IMG [IMG ...]      the N x N grid of paired maps (Fig. 1)
  retrieve QUERY --gallery G    top-k results with maps, green when the label matches (Fig. 9);
                                ``--compare RUN_OR_WEIGHTS`` (+ ``--compare-*`` options)
                                adds a second model's row
  class-map QUERY [...] --gallery G   class similarity maps (Section 4.2, Fig. 5)
  training QUERY --gallery G --workdir RUN   maps at several checkpoints (Fig. 6)
  rollout A B                   output-agnostic rollout beside the paired maps (Fig. 8)
  demo                          every figure from the embedded demo model (``--train``:
                                train the demo model here first)
  batch --pairs F | --images S (--top-k K | --all-pairs) --out DIR
                                maps of many pairs to resumable shard files (pairviz_jax.batch)
  evaluate [--photos] [--method M]  faithfulness of every explanation method (demo or photos)

An image is a file or ``DATASET:SPLIT:INDEX`` (``demo:test:0``); a gallery is a directory
(labels from its class sub-folders) or ``DATASET[:SPLIT]``. The model is a train.py run
(``--workdir DIR [--step N]``, or an exported run file) or an imported weight file
(``--weights FILE``). ``--style paper`` draws the authors' pictures (OpenCV JET on
greyscale).

Bad input gives one line on stderr naming the file or option, and exit status 1 (2 for
command-line syntax). This module holds the table of subcommands and the dispatch only; a
subcommand is ``add_arguments(parser)`` and ``run(args) -> [paths]`` in the library
(``pairviz_jax.plotting.cli``, ``pairviz_jax.plotting.demo``, ``pairviz_jax.batch.cli``),
listed in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from pairviz_jax import runs
from pairviz_jax.batch import cli as batch_cli
from pairviz_jax.plotting import checks, cli, demo
from pairviz_jax.plotting.cli import Command
from pairviz_jax.viewer import cli as viewer_cli

PROG = "visualize.py"  # the repository's script; the installed command is "pairviz"

COMMANDS: dict[str, Command] = {
    "pair": Command("paired maps of two images (Fig. 3/4)", cli.pair_arguments, cli.pair),
    "matrix": Command("N x N grid of paired maps (Fig. 1)", cli.matrix_arguments, cli.matrix),
    "retrieve": Command("top-k retrieval with maps (Fig. 9)", cli.retrieve_arguments, cli.retrieve),
    "class-map": Command("class similarity maps (Fig. 5)", cli.class_map_arguments, cli.class_map),
    "training": Command(
        "maps across checkpoints of a run (Fig. 6)",
        cli.training_arguments,
        cli.training,
        ("run", "render"),
    ),
    "rollout": Command("rollout beside paired maps (Fig. 8)", cli.rollout_arguments, cli.rollout),
    "demo": Command(
        "every figure from the embedded demo model (--train: train it here first)",
        demo.add_arguments,
        demo.run_args,
        (),
    ),
    "batch": Command(
        "maps of many pairs to shard files", batch_cli.add_arguments, batch_cli.run, ("model",)
    ),
    "evaluate": Command(
        "faithfulness table and curves (demo or photos)",
        cli.evaluate_arguments,
        cli.evaluate,
        ("model",),
    ),
}

# explore, report: HTML pages (pairviz_jax.viewer; its cli imports only argparse at first).
COMMANDS.update({name: Command(*sub) for name, sub in viewer_cli.COMMANDS.items()})


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2; an unknown option is
    named (with the closest known one) before any complaint about a missing required one."""

    _innermost: _Parser | None = None  # the last (sub)parser that parsed: its options count

    def parse_known_args(self, args=None, namespace=None):
        self._seen = list(sys.argv[1:] if args is None else args)
        _Parser._innermost = self
        return super().parse_known_args(args, namespace)

    def _unknown_option(self, tokens: list[str] | None = None) -> str | None:
        parser = _Parser._innermost or self
        options = parser._option_string_actions
        known = [s for s in options if s.startswith("--")]
        for token in getattr(parser, "_seen", []) if tokens is None else tokens:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if name.startswith("-") and len(name) > 1 and not name[1:2].isdigit():
                if name not in options:
                    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    return f"unrecognized option {name}{hint}"
        return None

    def error(self, message: str):
        unknown = self._unknown_option()
        if unknown is not None and "unrecognized" not in message:
            message = unknown
        elif message.startswith("unrecognized arguments:"):
            extra = message.split(":", 1)[1].split()
            message = self._unknown_option(extra) or f"unexpected argument {extra[0]}"
        if "--workdir --weights is required" in message:
            message += f" (e.g. --workdir {checks.DEMO_RUN}, the embedded demo model)"
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        formatter_class=cli.HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, (help_text, add_arguments, run, options) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            allow_abbrev=False,
            formatter_class=cli.HelpFormatter,
        )
        add_arguments(p)
        if "model" in options:
            runs.add_model_arguments(p)
        if "run" in options:
            runs.add_model_arguments(p, weights=False, step=False)
        if "render" in options:
            cli.add_render_arguments(p, name.replace("-", "_"))
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Parses ``argv``, runs the subcommand, prints the files written; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    args.prog = prog  # errors found after parsing name the program that ran
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        checks.check_args(args)  # every value, before anything is loaded or computed
        written = args.run(args)
    except runs.InputError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        msg = " ".join(str(e).split())[:300]
        print(
            f"{prog}: error: {args.command} failed: {type(e).__name__}: {msg} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    for path in written:
        print(path)
    return 0


def console() -> None:
    """The installed ``pairviz`` command (``[project.scripts]``)."""
    sys.exit(main(prog="pairviz"))
