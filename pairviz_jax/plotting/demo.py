"""``visualize.py demo``: every figure of the paper from the demo model, in seconds.

The demo model (``configs/demo.py``: a small ViT on the glyphs of ``pairviz_jax.data.demo``,
drawn locally) ships with the package as an exported run (``assets/demo_run.npz``: the
final checkpoint in float32 and the three earlier ones drawn across training in float16,
with the run's config; ``pairviz_jax.runs.export_run``). By default the figures come from
it, with no training. The run is trained (``python train.py --config configs/demo.py
--workdir WORKDIR``) instead when

* ``--train`` or ``--workdir`` is given: the figures come from that run directory;
* the embedded file is missing, unreadable, or was trained with another config than
  ``--config`` (someone changed ``configs/demo.py``): the figures come from
  ``workdirs/demo``.

A run directory that has not reached its configured last step (or whose final evaluation
is missing) is resumed to the end first: figures are never drawn from a half-trained run.
Every figure's title names the run and the step its maps come from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from pairviz_jax import runs
from pairviz_jax.plotting.cli import pick_steps
from pairviz_jax.runs.errors import InputError

__all__ = [
    "EMBEDDED",
    "FIGURES",
    "add_arguments",
    "embedded_run",
    "ensure_trained",
    "export",
    "render",
    "run",
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMBEDDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "demo_run.npz")
WORKDIR = os.path.join("workdirs", "demo")
CONFIG = os.path.join("configs", "demo.py")

# The demo test split's class of index i is i % 24: 0, 24 and 48 are one glyph.
PAIR = ("demo:test:0", "demo:test:24")
MATRIX = ("demo:test:0", "demo:test:24", "demo:test:7")
QUERY = "demo:test:0"
CLASS_QUERIES = ("demo:test:0", "demo:test:1", "demo:test:2", "demo:test:3")
GALLERY = "demo:test"
TRAINING_ROWS = 4

FIGURES = (
    "pair.png",
    "pair_paper.png",
    "matrix.png",
    "retrieve.png",
    "class_map.png",
    "training.png",
    "rollout.png",
)


def _log(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _config_path(config: str) -> str:
    """A config given relative to the repository works from any directory."""
    path, sep, arg = config.partition(":")
    if not os.path.isfile(path) and os.path.isfile(os.path.join(ROOT, path)):
        path = os.path.join(ROOT, path)
    return path + sep + arg


def embedded_run(config: str = CONFIG, path: str | None = None) -> tuple[str | None, str]:
    """The embedded demo run (``path``, default ``EMBEDDED``) if it is current for ``config``.

    Returns:
      ``(path, "")`` when the file exists and was trained with ``config``'s exact fields,
      else ``(None, why not)``.
    """
    path = path or EMBEDDED
    if not os.path.isfile(path):
        return None, f"no embedded demo model ({path})"
    config = _config_path(config)
    if config == _config_path(CONFIG) and not os.path.isfile(config.partition(":")[0]):
        return path, ""  # installed without the repository: the model as shipped
    try:
        run = runs.read_exported(path)
        changes = runs.config_changes(run, config)
    except (OSError, ValueError, KeyError) as e:
        return None, f"the embedded demo model cannot be used ({runs.one_line(e, 200)})"
    if changes:
        shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes[:3])
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        return None, f"the embedded demo model was trained with another config ({shown}{more})"
    return path, ""


def ensure_trained(workdir: str, config: str, *, python: str | None = None) -> bool:
    """Trains the demo run in ``workdir``, or resumes it, unless it is finished.

    Returns:
      True if training ran.

    Raises:
      InputError: the config file is missing, or training failed or did not finish.
    """
    status = runs.run_status(workdir)
    if status.finished:
        return False
    config = _config_path(config)
    train_py = os.path.join(ROOT, "train.py")
    if not os.path.isfile(config.split(":")[0]):  # a config may take an argument: FILE:ARG
        raise InputError(f"--config {config}: no such file (the demo's training config)")
    if not os.path.isfile(train_py):
        raise InputError(f"{train_py}: no such file (the training entry point)")
    cmd = [python or sys.executable, train_py, "--config", config, "--workdir", workdir]
    what = "training" if status.latest is None else "resuming"
    _log(f"{workdir}: {status.describe()}: {what} the demo run: {' '.join(cmd)}")
    t0 = time.perf_counter()
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise InputError(f"demo training failed (exit status {result.returncode}): {' '.join(cmd)}")
    status = runs.run_status(workdir)
    if not status.finished:
        raise InputError(f"{workdir}: {status.describe()} after {' '.join(cmd)}")
    _log(f"trained in {time.perf_counter() - t0:.0f} s")
    return True


def min_gallery_size() -> int:
    """The fewest first test images that hold another image of each class-map query's class
    (example ``i`` of the demo's test split is of class ``i % 24``)."""
    from pairviz_jax.data.demo import TEST_GLYPHS

    indices = [int(q.rsplit(":", 1)[1]) for q in CLASS_QUERIES]
    return max(i + len(TEST_GLYPHS) for i in indices) + 1


def check_gallery_size(gallery_size: int | None) -> None:
    """Refuses a ``--gallery-size`` too small for the demo's figures, before any work."""
    if gallery_size is not None and gallery_size < min_gallery_size():
        raise InputError(
            f"--gallery-size {gallery_size}: the demo's class maps need at least "
            f"{min_gallery_size()} test images (a second image of each query's class)"
        )


def render(
    source: str, out: str, *, pdf: bool = False, gallery_size: int | None = None
) -> list[str]:
    """Draws every figure type (``FIGURES``) of the run ``source`` into ``out``.

    Args:
      source: a finished run directory or an exported run.
      out: folder for the figures.
      pdf: also write PDFs.
      gallery_size: use only the first images of the test split as the gallery (default
        all 768).

    Returns:
      The paths written.
    """
    from pairviz_jax.plotting import commands
    from pairviz_jax.plotting.figures import Style, save_figure
    from pairviz_jax.plotting.inputs import open_gallery, read_example

    m = runs.load_run(source)
    modern, paper = Style("modern"), Style("paper")
    written: list[str] = []

    def save(fig, name):
        written.extend(save_figure(fig, os.path.join(out, name), pdf=pdf))
        _log(f"wrote {written[-1]}")

    a, b = (read_example(r, m) for r in PAIR)
    save(commands.pair(m, a, b, style=modern), "pair.png")
    save(commands.pair(m, a, b, style=paper), "pair_paper.png")
    save(commands.matrix(m, [read_example(r, m) for r in MATRIX], style=modern), "matrix.png")
    gallery = open_gallery(GALLERY, m, limit=gallery_size)
    query = read_example(QUERY, m)
    save(commands.retrieve([(m, query, gallery)], 4, style=modern), "retrieve.png")
    queries = [read_example(r, m) for r in CLASS_QUERIES]
    save(commands.class_maps(m, queries, gallery, style=modern), "class_map.png")
    rows = []
    for step in pick_steps(runs.checkpoint_steps(source), TRAINING_ROWS):
        ms = m if step == m.step else runs.load_run(source, step)
        rows.append((ms, query, gallery))
    save(commands.training(rows, 3, style=modern), "training.png")
    save(commands.rollout(m, a, b, style=modern), "rollout.png")
    return written


def export(workdir: str, path: str | None = None) -> str:
    """Writes a finished demo run as the embedded model (the steps the figures draw)."""
    path = path or EMBEDDED
    steps = pick_steps(runs.checkpoint_steps(workdir), TRAINING_ROWS)
    try:
        runs.export_run(workdir, path, steps=steps, name="demo")
    except ValueError as e:
        raise InputError(runs.one_line(e)) from None
    _log(f"exported {workdir} (steps {', '.join(map(str, steps))}) to {path}")
    return path


def run(
    workdir: str | None,
    out: str,
    *,
    config: str = CONFIG,
    train: bool = False,
    pdf: bool = False,
    gallery_size: int | None = None,
    export_to: str | None = None,
) -> list[str]:
    """The demo: the embedded model's figures, or a run's after training it (module doc).

    Args:
      workdir: a run directory to train (or resume) and draw from, or an exported run to
        draw from; None: the embedded model, or ``workdirs/demo`` with ``train`` or when the
        embedded model is not current.
      out: folder for the figures.
      config: the training config of the demo.
      train: train into ``workdir`` (default ``workdirs/demo``) rather than use the
        embedded model.
      pdf: also write PDFs.
      gallery_size: use only the first test images as the gallery.
      export_to: afterwards write the run as an exported run file there (maintainers:
        the embedded model after ``configs/demo.py`` changed).

    Returns:
      The paths written.
    """
    check_gallery_size(gallery_size)
    source = None
    if workdir is not None and runs.is_exported(workdir):
        if train:
            raise InputError(f"--workdir {workdir}: an exported run cannot be trained")
        source = workdir  # finished when exported
    elif workdir is None and not train:
        source, why = embedded_run(config)
        if source is None:
            _log(f"{why}: training instead, into {WORKDIR}")
        else:
            _log(f"the embedded demo model ({os.path.relpath(source)}); --train trains one")
    if source is None:
        workdir = workdir or WORKDIR
        ensure_trained(workdir, config)
        source = workdir
    written = render(source, out, pdf=pdf, gallery_size=gallery_size)
    if export_to:
        if source == export_to:
            raise InputError(f"--export {export_to}: that is the run drawn from")
        written.append(export(source, export_to))
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``visualize.py demo``'s options."""
    p.add_argument(
        "--workdir",
        help=f"draw from this train.py run, trained or resumed to its end first (default: the "
        f"embedded model; with --train: {WORKDIR})",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="train the demo model (or resume it) instead of using the embedded one",
    )
    p.add_argument("--config", default=CONFIG, help="the demo's training config")
    p.add_argument("--out", default=os.path.join("out", "demo"), help="folder for the figures")
    p.add_argument("--pdf", action="store_true", help="also write PDFs")
    p.add_argument("--gallery-size", type=int, help="gallery: the first N test images")
    p.add_argument(
        "--export",
        metavar="FILE",
        help="also write the run as an exported run (.npz), e.g. the embedded model's file",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def run_args(args: argparse.Namespace) -> list[str]:
    """``visualize.py demo``."""
    check_gallery_size(args.gallery_size)  # before the run is looked at
    return run(
        args.workdir,
        args.out,
        config=args.config,
        train=args.train,
        pdf=args.pdf,
        gallery_size=args.gallery_size,
        export_to=args.export,
    )
