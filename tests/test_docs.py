"""The docs and their API reference build with warnings as errors: a renamed function, a
broken cross-reference or a malformed docstring fails here. The command is the one
``docs/index.md`` prints."""

import os
import shlex
import subprocess
import sys

from tests import docs_blocks as db

ROOT = db.ROOT
# The public modules the reference must document (issue 21): each has its automodule.
PUBLIC = (
    "explain",
    "explain.methods",
    "models",
    "evaluate",
    "batch",
    "data",
    "checkpoints",
    "runs",
)


def _printed_command() -> list[str]:
    (block,) = [b for b in db.blocks("docs/index.md") if "sphinx" in b.text]
    (command,) = db.commands(block.text)
    return shlex.split(command.split("#")[0])


def test_the_docs_build_with_warnings_as_errors(tmp_path):
    cmd = _printed_command()
    assert cmd[:3] == ["python", "-m", "sphinx"] and "-W" in cmd and cmd[-2:][0] == "docs"
    out = tmp_path / "html"  # the printed command's output folder, out of the checkout
    done = subprocess.run(
        [sys.executable, *cmd[1:-1], str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    page = (out / "api.html").read_text(encoding="utf-8")
    for name in ("paired_maps", "cross_maps", "against", "ViT", "Probe", "run_batch"):
        assert 'id="pairviz_jax.' in page and name in page, name
    for module in PUBLIC:
        assert f'id="module-pairviz_jax.{module}"' in page, module
    for name in db.toctree():
        assert (out / os.path.basename(name).replace(".md", ".html")).is_file(), name
