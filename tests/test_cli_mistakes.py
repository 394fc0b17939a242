"""Command-line mistakes: one line naming the argument, exit status 2 or 1, before any work.

Every case runs ``visualize.py`` / ``train.py`` in-process with the model loaders, the batch
job, the evaluation, the report and training replaced by a function that fails the test: a
mistake must be refused before any of them starts. ``python tests/test_cli_mistakes.py
[--repo DIR]`` runs every case as a real process and prints a table (the report's list).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join("pairviz_jax", "plotting", "assets", "demo_run.npz")
P = ["pair", "{img}", "{img}"]  # a pair of existing images
PR = [*P, "--workdir", RUN]
PW = [*P, "--weights", "README.md"]  # a weight file (numbers are checked before reading it)
G = ["--gallery", "{dir}"]
EV = ["evaluate", "--workdir", RUN]
BA = ["batch", "--workdir", RUN]

# (argv, exit status, what the one line must name)
VISUALIZE = [
    # the list
    ([*P, "--workdir", "README.md"], 1, "--workdir README.md"),
    ([*P, "--workdir", "/proc/nope"], 1, "--workdir /proc/nope"),
    (["demo", "--workdir", "README.md"], 1, "--workdir README.md"),
    ([*PW, "--image-size", "-14"], 1, "--image-size -14"),
    ([*PR, "--out", "out/"], 1, "--out out/"),
    ([*PR, "--out", "/proc/nope/x.png"], 1, "--out /proc/nope/x.png"),
    ([*BA, "--images", "demo:test", "--top-k", "2", "--out", "README.md"], 1, "--out README.md"),
    ([*P, "--workdri", RUN], 2, "--workdri"),
    # the model
    ([*P, "--workdir", "{tmp}/nothing"], 1, "--workdir"),
    ([*P, "--weights", "{tmp}/none.npz"], 1, "--weights"),
    ([*P, "--workdir", RUN, "--weights", "README.md"], 2, "--weights"),
    ([*P], 2, "--workdir"),
    ([*PW, "--image-size", "0"], 1, "--image-size 0"),
    ([*PW, "--num-heads", "0"], 1, "--num-heads 0"),
    ([*PW, "--pool-type", "max"], 2, "--pool-type"),
    ([*PW, "--image-size", "big"], 2, "--image-size"),
    ([*PR, "--step", "-1"], 1, "--step -1"),
    ([*PR, "--step", "x"], 2, "--step"),
    ([*PR, "--image-size", "64"], 1, "--image-size"),
    ([*PW, "--model-option", "num_groups"], 1, "--model-option num_groups"),
    ([*P, "--weigths", "README.md"], 2, "--weigths"),
    # the output
    ([*PR, "--out", "{dir}"], 1, "--out"),
    ([*PR, "--out", "x.txt"], 1, "--out x.txt"),
    ([*PR, "--out", "figure"], 1, "--out figure"),
    ([*PR, "--out", "README.md/x.png"], 1, "--out README.md/x.png"),
    ([*PR, "--out", ""], 1, "--out"),
    ([*PR, "--dpi", "0"], 1, "--dpi 0"),
    ([*PR, "--dpi", "many"], 2, "--dpi"),
    ([*PR, "--alpha", "-1"], 1, "--alpha -1"),
    ([*PR, "--alpha", "1.5"], 1, "--alpha 1.5"),
    ([*PR, "--cmap", "nocolours"], 1, "--cmap nocolours"),
    ([*PR, "--style", "neon"], 2, "--style"),
    ([*PR, "--method", "magic"], 2, "--method"),
    ([*PR, "--method", "chefer", "--convention", "transpose"], 1, "--convention"),
    ([*PR, "--convention", "sideways"], 2, "--convention"),
    # the images
    (["pair", "{tmp}/missing.png", "{img}", "--workdir", RUN], 1, "missing.png"),
    (["pair", "{img}", "missing.jpg", "--workdir", RUN], 1, "missing.jpg"),
    (["pair", "{img}", "--workdir", RUN], 2, "b"),
    ([*PR, "extra.png"], 2, "extra.png"),
    (["matrix", "{img}", "--workdir", RUN], 1, "at least 2"),
    (["matrix", "{img}", "nope.png", "--workdir", RUN], 1, "nope.png"),
    (["rollout", "{img}", "gone.png", "--workdir", RUN], 1, "gone.png"),
    (["retrieve", "{img}", "--workdir", RUN, "--gallery", "no/such/folder"], 1, "--gallery"),
    (["retrieve", "{img}", "--workdir", RUN, "--gallery", "README.md"], 1, "--gallery"),
    (["retrieve", "{img}", "--workdir", RUN], 2, "--gallery"),
    (["retrieve", "{img}", *G, "--workdir", RUN, "--top", "0"], 1, "--top 0"),
    (["retrieve", "{img}", *G, "--workdir", RUN, "--gallery-size", "0"], 1, "--gallery-size 0"),
    (["retrieve", "{img}", *G, "--workdir", RUN, "--compare", "{tmp}/no"], 1, "--compare"),
    (["retrieve", "{img}", *G, "--workdir", RUN, "--compare-step", "2"], 1, "--compare-step"),
    (
        ["retrieve", "{img}", *G, "--workdir", RUN, "--compare-model-option", "a=1"],
        1,
        "--compare-model-option",
    ),
    (["class-map", "ghost.png", *G, "--workdir", RUN], 1, "ghost.png"),
    (["training", "{img}", *G, "--workdir", RUN, "--rows", "0"], 1, "--rows 0"),
    (["training", "{img}", *G, "--workdir", RUN, "--step", "3"], 2, "--step"),
    # the command line itself
    (["frobnicate"], 2, "frobnicate"),
    (["pai", "a", "b"], 2, "pai"),
    ([], 2, "SUBCOMMAND"),
    (["--hlep"], 2, "--hlep"),
    ([*PR, "--frob"], 2, "--frob"),
    # evaluate
    ([*EV, "--pairs", "0"], 1, "--pairs 0"),
    ([*EV, "--pairs", "-5"], 1, "--pairs -5"),
    ([*EV, "--steps", "0"], 1, "--steps 0"),
    ([*EV, "--curve-pairs", "-1"], 1, "--curve-pairs -1"),
    ([*EV, "--out", "out/"], 1, "--out out/"),
    ([*EV, "--out", "curves.txt"], 1, "--out curves.txt"),
    ([*EV, "--figure", "{dir}"], 1, "--figure"),
    ([*EV, "--cache", "README.md"], 1, "--cache README.md"),
    ([*EV, "--method", "magic"], 1, "--method magic"),
    ([*EV, "--option", "ig.steps"], 1, "--option ig.steps"),
    ([*EV, "--option", "nope.k=1"], 1, "--option nope.k=1"),
    ([*EV, "--baseline", "zero"], 2, "--baseline"),
    ([*EV, "--pairs", "two"], 2, "--pairs"),
    # batch
    ([*BA, "--pairs", "{tmp}/missing.tsv", "--out", "{tmp}/b"], 1, "--pairs"),
    ([*BA, "--pairs", "{dir}", "--out", "{tmp}/b"], 1, "--pairs"),
    ([*BA, "--images", "demo:test", "--out", "{tmp}/b"], 1, "--top-k"),
    ([*BA, "--images", "demo:test", "--top-k", "0", "--out", "{tmp}/b"], 1, "--top-k 0"),
    ([*BA, "--images", "demo:test", "--top-k", "2", "--all-pairs", "--out", "{tmp}/b"], 1, "--all"),
    ([*BA, "--pairs", "README.md", "--images", "demo:test", "--out", "{tmp}/b"], 2, "--images"),
    (
        [*BA, "--images", "demo:test", "--all-pairs", "--shard-size", "0", "--out", "{tmp}/b"],
        1,
        "--shard-size 0",
    ),
    (
        [*BA, "--images", "demo:test", "--all-pairs", "--png", "-1", "--out", "{tmp}/b"],
        1,
        "--png -1",
    ),
    (
        [*BA, "--images", "demo:test", "--all-pairs", "--method", "magic", "--out", "{tmp}/b"],
        1,
        "--method magic",
    ),
    ([*BA, "--images", "demo:test", "--all-pairs", "--out", "/proc/nope"], 1, "--out /proc/nope"),
    ([*BA, "--images", "demo:test", "--all-pairs"], 2, "--out"),
    # explore and report
    (["explore", "{img}", "{img}", "--workdir", RUN, "--out", "x.png"], 1, "--out x.png"),
    (["explore", "{img}", "{img}", "--workdir", RUN, "--display", "10"], 1, "--display 10"),
    (["explore", "{img}", "{img}", "--workdir", RUN, "--start-layer", "-1"], 1, "--start-layer"),
    (["explore", "{img}", "{img}", "--workdir", RUN, "--cmap", "nope"], 1, "--cmap nope"),
    (["explore", "{img}", "{img}", "--workdir", RUN, "--head-fusion", "sum"], 2, "--head-fusion"),
    (["report", "{tmp}/nojob"], 1, "nojob"),
    (["report", "README.md"], 1, "README.md"),
    (["report", "{dir}"], 1, "no batch job here"),
    (["report", "{job}"], 1, "--partial"),
    (["report", "{job}", "--partial", "--per-page", "0"], 1, "--per-page 0"),
    (["report", "{job}", "--partial", "--thumb", "5"], 1, "--thumb 5"),
    (["report", "{job}", "--partial", "--per-query", "0"], 1, "--per-query 0"),
    (["report", "{job}", "--partial", "--order", "random"], 2, "--order"),
    (["report", "{job}", "--partial", "--dest", "README.md"], 1, "--dest README.md"),
    (["report", "{job}", "--partial", "--cmap", "nope"], 1, "--cmap nope"),
    # demo
    (["demo", "--out", "README.md"], 1, "--out README.md"),
    (["demo", "--gallery-size", "0"], 1, "--gallery-size 0"),
    (["demo", "--gallery-size", "8"], 1, "need at least 28 test images"),  # was: after 4 figures
    (["demo", "--config", "configs/nope.py"], 1, "--config"),
    (["demo", "--export", "model.txt"], 1, "--export model.txt"),
]

TRAIN = [
    (["--config", "configs/demo.py", "--workdir", "README.md"], "--workdir README.md"),
    (["--config", "configs/demo.py", "--workdir", "/proc/nope"], "--workdir /proc/nope"),
    (["--confg", "configs/demo.py", "--workdir", "{tmp}/w"], "--confg"),
    (["--config", "configs/demo.py", "--workdri", "{tmp}/w"], "--workdri"),
    (["--workdir", "{tmp}/w"], "--config"),
    (["--config", "configs/demo.py"], "--workdir"),
    (["--config", "configs/nope.py", "--workdir", "{tmp}/w"], "configs/nope.py"),
    (
        ["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.batch_size=-3"],
        "batch_size",
    ),
    (
        ["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.total_steps=0"],
        "total_steps",
    ),
    (["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.optim.lr=-1"], "optim.lr"),
    (["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.nope=1"], "nope"),
    (
        ["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.batch_size=ab"],
        "batch_size",
    ),
    (
        ["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.optim.pct_start=2"],
        "pct_start",
    ),
    (["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--num_processes=x"], "num_processes"),
    (
        ["--config", "configs/demo.py", "--workdir", "{tmp}/w", "--config.input.image_size=0"],
        "image_size",
    ),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mistakes")
    img = tmp / "image.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(img)
    folder = tmp / "folder"
    folder.mkdir()
    job = tmp / "job"  # a batch job that has started (job.json) but not finished
    job.mkdir()
    (job / "job.json").write_text("{}")
    return {"tmp": str(tmp), "img": str(img), "dir": str(folder), "job": str(job)}


def _fill(argv, places):
    return [a.format(**places) for a in argv]


@pytest.fixture
def no_work(monkeypatch):
    """Every loader and every job fails the test: a mistake must stop before them."""
    from pairviz_jax import runs
    from pairviz_jax.batch import job
    from pairviz_jax.evaluate import commands
    from pairviz_jax.plotting import demo
    from pairviz_jax.runs import load
    from pairviz_jax.train import loop
    from pairviz_jax.viewer import report

    def work(*args, **kwargs):
        raise AssertionError("work started before the mistake was refused")

    for module, name in [
        (runs, "load_run"),
        (runs, "load_weights"),
        (load, "load_run"),
        (load, "load_weights"),
        (job, "run_loaded"),
        (commands, "run"),
        (demo, "run"),
        (report, "write_report"),
        (loop, "train_and_evaluate"),
    ]:
        monkeypatch.setattr(module, name, work)


@pytest.mark.parametrize("argv, status, needle", VISUALIZE, ids=lambda v: None)
def test_visualize_mistake_is_one_line_before_any_work(
    argv, status, needle, places, no_work, capsys, monkeypatch
):
    import visualize

    monkeypatch.chdir(ROOT)
    argv = _fill(argv, places)
    try:
        rc = visualize.main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle.format(**places) in lines[0], err


@pytest.mark.parametrize("argv, needle", TRAIN)
def test_train_mistake_is_one_line_before_any_work(
    argv, needle, places, no_work, capsys, monkeypatch
):
    from absl import flags

    import train
    from pairviz_jax.train import cli

    monkeypatch.chdir(ROOT)
    argv = ["train.py", *_fill(argv, places)]
    rc = cli.main(argv, train.define_flags(flags.FlagValues(), argv), train.__doc__)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], err
    assert not os.path.exists(os.path.join(places["tmp"], "w")), "the workdir was made"


def _runs_in_a_fresh_process(code: str) -> None:
    """``code`` runs without error in a new interpreter (what it imports is its own)."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr


def test_help_imports_no_jax():
    """``--help`` of every subcommand builds its parser without importing JAX."""
    code = (
        "import sys, visualize, train\n"
        "from absl import flags\n"
        "from pairviz_jax.train import cli\n"
        "parser = visualize.build_parser()\n"
        "for sub in parser._subparsers._group_actions[0].choices.values():\n"
        "    assert '--' in sub.format_help()\n"
        "cli._usage(train.__doc__, [], train.define_flags(flags.FlagValues(), ['train.py']))\n"
        "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)[:5]\n"
    )
    _runs_in_a_fresh_process(code)


def test_a_batch_worker_imports_neither_the_input_pipeline_nor_the_demo():
    """``pairviz_jax.data``'s names are imported on first use: a batch worker (which reads
    image files) starts without grain and orbax (the training input pipeline) or matplotlib
    (the demo's fonts): 0.4 s less per process, on every machine of a job."""
    code = (
        "import sys, pairviz_jax.batch.job\n"
        "heavy = ('grain', 'matplotlib', 'pairviz_jax.data.pipeline')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from pairviz_jax import data\n"
        "assert callable(data.make_dataset) and data.demo.TEST_GLYPHS and 'grain' in sys.modules\n"
    )
    _runs_in_a_fresh_process(code)


def test_the_written_out_names_match_their_sources():
    """Names kept out of the JAX modules for ``--help`` agree with the modules."""
    from pairviz_jax.batch import cli as batch_cli
    from pairviz_jax.batch import job
    from pairviz_jax.explain import methods
    from pairviz_jax.models import vit
    from pairviz_jax.plotting import cli
    from pairviz_jax.runs import options

    assert batch_cli.DEFAULT_SHARD_SIZE == job.DEFAULT_SHARD_SIZE
    assert batch_cli.DEFAULT_DEVICE_BUDGET == job.DEFAULT_DEVICE_BUDGET
    assert options.POOL_TYPES == vit.POOL_TYPES
    assert sorted(cli.METHOD_NAMES) == sorted(methods.METHODS)


def _table(repo: str) -> None:
    """Every case as a real process in ``repo``: status, seconds, lines of stderr, first line."""
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        places = {"tmp": tmp, "img": os.path.join(tmp, "image.png"), "dir": os.path.join(tmp, "d")}
        places["job"] = os.path.join(tmp, "job")
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(places["img"])
        os.makedirs(places["dir"])
        os.makedirs(places["job"])
        open(os.path.join(places["job"], "job.json"), "w").write("{}")
        cases = [(["visualize.py", *a], s) for a, s, _ in VISUALIZE]
        cases += [(["train.py", *a], 2) for a, _ in TRAIN]
        for argv, _ in cases:
            argv = _fill(argv, places)
            t0 = time.perf_counter()
            try:
                p = subprocess.run(
                    [sys.executable, *argv],
                    cwd=repo,
                    capture_output=True,
                    text=True,
                    timeout=int(os.environ.get("CASE_TIMEOUT", "60")),
                    env={**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"},
                )
                rc, err = p.returncode, p.stderr.strip().splitlines()
            except subprocess.TimeoutExpired:
                rc, err = "timeout", []
            dt = time.perf_counter() - t0
            first = (err[-1] if err else "")[:150].replace(tmp, "TMP")
            shown = " ".join(argv).replace(tmp, "TMP")
            print(f"| `{shown}` | {rc} | {dt:.1f} | {len(err)} | {first} |", flush=True)


if __name__ == "__main__":
    _table(sys.argv[sys.argv.index("--repo") + 1] if "--repo" in sys.argv else ROOT)
