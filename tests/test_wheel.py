"""Installed like a library: the wheel carries the package, the demo model and the viewer's
files, and its ``pairviz`` command runs the demo outside the repository."""

import os
import shutil
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy of what the wheel is made of, so no build/ folder lands in the checkout.
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(
        os.path.join(ROOT, "pairviz_jax"),
        src / "pairviz_jax",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*cmd, "-w", str(out), str(src)], check=True, timeout=600)
    (path,) = out.glob("pairviz_jax-*.whl")
    return path


def test_the_wheel_holds_the_demo_run_the_viewer_files_and_the_command(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "pairviz_jax/plotting/assets/demo_run.npz" in names
    assert any(n.startswith("pairviz_jax/viewer/static/") for n in names)
    assert "pairviz_jax/cli.py" in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "pairviz = pairviz_jax.cli:console" in text
    assert not any(n.startswith(("tests/", "tools/", "benchmarks/")) for n in names)


def test_pairviz_demo_runs_from_a_fresh_venv_outside_the_repository(wheel, tmp_path):
    # A fresh venv that sees this machine's installed dependencies (jax, flax, ...) but not
    # the repository: the package and its data come from the wheel alone.
    env_dir = tmp_path / "venv"
    # No pip of its own (ensurepip: 6 s of CPU): the machine's pip, seen through the system
    # site-packages, installs into the venv it runs in.
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPLBACKEND"] = "Agg"
    env.pop("XLA_FLAGS", None)  # a user's: not the suite's fake devices and -O0 (conftest)
    where = subprocess.run(
        [str(py), "-c", "import pairviz_jax; print(pairviz_jax.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert str(env_dir) in where.stdout, where.stdout  # the wheel's copy, not the checkout
    from pairviz_jax.plotting.demo import min_gallery_size

    done = subprocess.run(
        # the fewest test images the demo takes as its gallery: every figure and code path
        # of the demo (the README's test runs the full demo, as printed)
        [
            str(env_dir / "bin" / "pairviz"),
            "demo",
            "--out",
            str(work / "figs"),
            "--gallery-size",
            str(min_gallery_size()),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pngs = sorted(p.name for p in (work / "figs").glob("*.png"))
    assert len(pngs) >= 5, (pngs, done.stdout)
