"""``visualize.py demo``: the demo model (trained here if needed) and every figure for it.

Nothing is downloaded: the demo dataset (``pairviz_jax.data.demo``, glyphs on clutter)
is drawn on demand. If ``workdir`` holds no checkpoint yet, the demo run is trained
first with the project's own entry point,
``python train.py --config configs/demo.py --workdir WORKDIR``. Then every figure type
is rendered into ``out``: the paired maps (both styles), the matrix, retrieval, class
maps, maps across training and rollout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pairviz_jax.plotting import commands
from pairviz_jax.plotting.figures import Style, save_figure
from pairviz_jax.plotting.images import InputError
from pairviz_jax.plotting.inputs import open_gallery, read_example
from pairviz_jax.plotting.loading import checkpoint_steps, load_run

__all__ = ["FIGURES", "run", "train_if_needed"]

# The demo test split's class of index i is i % 24: 0, 24 and 48 are one glyph.
PAIR = ("demo:test:0", "demo:test:24")
MATRIX = ("demo:test:0", "demo:test:24", "demo:test:7")
QUERY = "demo:test:0"
CLASS_QUERIES = ("demo:test:0", "demo:test:1", "demo:test:2", "demo:test:3")
GALLERY = "demo:test"

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


def train_if_needed(workdir: str, config: str, *, python: str = sys.executable) -> bool:
    """Runs the demo training unless ``workdir`` already has a checkpoint.

    Returns:
      True if training ran.

    Raises:
      InputError: the config file is missing or training failed.
    """
    if checkpoint_steps(workdir):
        return False
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    train_py = os.path.join(root, "train.py")
    if not os.path.isfile(config.split(":")[0]):  # a config may take an argument: FILE:ARG
        raise InputError(f"--config {config}: no such file (the demo's training config)")
    if not os.path.isfile(train_py):
        raise InputError(f"{train_py}: no such file (the training entry point)")
    cmd = [python, train_py, "--config", config, "--workdir", workdir]
    _log(f"no checkpoint in {workdir}: training the demo model: {' '.join(cmd)}")
    t0 = time.perf_counter()
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise InputError(f"demo training failed (exit status {result.returncode}): {' '.join(cmd)}")
    _log(f"trained in {time.perf_counter() - t0:.0f} s")
    return True


def run(
    workdir: str,
    out: str,
    *,
    config: str = "configs/demo.py",
    pdf: bool = False,
    gallery_size: int | None = None,
) -> list[str]:
    """Trains the demo model if needed and renders every figure type into ``out``.

    Args:
      workdir: the demo run's directory.
      out: folder for the figures (``FIGURES``).
      config: the training config used when no checkpoint exists.
      pdf: also write PDFs.
      gallery_size: use only the first images of the test split as the gallery (default
        all 768).

    Returns:
      The paths written.
    """
    train_if_needed(workdir, config)
    m = load_run(workdir)
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
    steps = checkpoint_steps(workdir)
    picks = sorted({steps[round(i * (len(steps) - 1) / 3)] for i in range(4)})
    rows = []
    for step in picks:
        ms = m if step == m.step else load_run(workdir, step)
        rows.append((ms, query, gallery))
    save(commands.training(rows, 3, style=modern), "training.png")
    save(commands.rollout(m, a, b, style=modern), "rollout.png")
    return written
