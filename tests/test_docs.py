"""The docs and their API reference build with warnings as errors: a renamed function, a
broken cross-reference or a malformed docstring fails here."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_docs_build_with_warnings_as_errors(tmp_path):
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    done = subprocess.run(
        [*cmd, os.path.join(ROOT, "docs"), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    page = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in ("paired_maps", "cross_maps", "against", "ViT", "Probe", "run_batch"):
        assert 'id="pairviz_jax.' in page and name in page, name
