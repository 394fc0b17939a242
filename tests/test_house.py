"""House rules read from the source with ``ast``: size limits and one home per small helper.

* no function over 100 lines and no file over 600 lines in ``pairviz_jax/``;
* a file is written atomically (temporary name, then rename) only by ``pairviz_jax._util``;
  the batch job's claims and commits (``batch/claims.py``, ``batch/store.py``: exclusive
  create, hard link, rename onto a directory) keep their own semantics;
* images are scaled by 1/255 for the model only in ``data/preprocess.py`` (the authors'
  renderer, ``plotting/paper.py``, scales its colours);
* a norm is floored only by ``_util.unit_np`` and ``explain.similarity.safe_norm`` (over
  ``_util.NORM_EPS``), not by a hand-written ``maximum(norm(x), 1e-12)``.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "pairviz_jax"

MAX_FUNCTION_LINES = 100
MAX_FILE_LINES = 600
ATOMIC_HOME = "_util.py"
BATCH_COMMITS = ("batch/claims.py", "batch/store.py")
NORMALISATION_HOME = "data/preprocess.py"
# The authors' heatmap renderer divides colours (not model input) by 255, pixel for pixel.
SCALES_COLOURS = "plotting/paper.py"


def _files() -> dict[str, ast.Module]:
    return {
        str(p.relative_to(ROOT)): ast.parse(p.read_text(), str(p))
        for p in sorted(ROOT.rglob("*.py"))
    }


def function_lengths() -> list[tuple[int, str]]:
    """``(lines, "file:line name")`` of every function and method, longest first."""
    out = []
    for rel, tree in _files().items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((n.end_lineno - n.lineno + 1, f"{rel}:{n.lineno} {n.name}"))
    return sorted(out, reverse=True)


def file_lengths() -> list[tuple[int, str]]:
    return sorted(
        ((len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in ROOT.rglob("*.py")),
        reverse=True,
    )


def rename_sites() -> list[str]:
    """``file:line`` of every ``os.replace``/``os.rename`` and ``<tmp>.replace(path)``."""
    out = []
    for rel, tree in _files().items():
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            f = n.func
            os_call = isinstance(f.value, ast.Name) and f.value.id == "os"
            if os_call and f.attr in ("replace", "rename"):
                out.append(f"{rel}:{n.lineno}")
            elif f.attr == "replace" and len(n.args) == 1 and "tmp" in ast.unparse(f.value):
                out.append(f"{rel}:{n.lineno}")  # pathlib/epath Path.replace
    return out


def _is_255(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in (255, 255.0)
    if isinstance(node, ast.Call) and len(node.args) == 1:  # np.float32(255.0)
        return _is_255(node.args[0])
    return False


def div255_sites() -> list[str]:
    """``file:line`` of every ``x / 255`` (images scaled to [0, 1])."""
    out = []
    for rel, tree in _files().items():
        for n in ast.walk(tree):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and _is_255(n.right):
                out.append(f"{rel}:{n.lineno}")
    return out


def norm_floors() -> list[str]:
    """``file:line`` of every hand-written norm floor: ``maximum(norm(x), 1e-12)`` (numpy,
    jax or the builtin ``max``)."""
    out = []
    for rel, tree in _files().items():
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call) or len(n.args) != 2:
                continue
            name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            if name not in ("maximum", "max"):
                continue
            eps = any(isinstance(a, ast.Constant) and a.value == 1e-12 for a in n.args)
            if eps and any("norm(" in ast.unparse(a) for a in n.args):
                out.append(f"{rel}:{n.lineno}")
    return out


def test_no_function_over_100_lines():
    long = [f"{where} ({n} lines)" for n, where in function_lengths() if n > MAX_FUNCTION_LINES]
    assert long == []


def test_no_file_over_600_lines():
    long = [f"{where} ({n} lines)" for n, where in file_lengths() if n > MAX_FILE_LINES]
    assert long == []


def test_atomic_writes_have_one_home():
    allowed = (ATOMIC_HOME, *BATCH_COMMITS)
    assert [s for s in rename_sites() if s.split(":")[0] not in allowed] == []


def test_images_are_scaled_only_in_preprocess():
    allowed = (NORMALISATION_HOME, SCALES_COLOURS)
    assert [s for s in div255_sites() if s.split(":")[0] not in allowed] == []


def test_norms_are_floored_only_by_the_helpers():
    # _util.unit_np (numpy) and explain.similarity.safe_norm (JAX), both over NORM_EPS.
    assert norm_floors() == []


def test_the_scanners_see_the_old_patterns(tmp_path):
    # The checks above would see each pattern they forbid.
    (tmp_path / "m.py").write_text(
        "import os\n"
        "def f(x, tmp, path):\n"
        "    os.replace(tmp, path)\n"
        "    tmp.replace(path)\n"
        "    return x / 255.0 + x / np.float32(255) + max(float(np.linalg.norm(x)), 1e-12)\n"
    )
    globals()["ROOT"], old = tmp_path, ROOT
    try:
        assert rename_sites() == ["m.py:3", "m.py:4"]
        assert div255_sites() == ["m.py:5", "m.py:5"]
        assert norm_floors() == ["m.py:5"]
        assert function_lengths() == [(4, "m.py:2 f")]
    finally:
        globals()["ROOT"] = old
