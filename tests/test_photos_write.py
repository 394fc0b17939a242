"""Helper scripts make the files the README names; tools import nothing from ``tests/``."""

import ast
import importlib.util
import os

import numpy as np
from PIL import Image

from tests import inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_photos_write_makes_the_readme_pair_and_a_labelled_gallery(tmp_path, capsys):
    for module in ("skimage", "sklearn"):
        if importlib.util.find_spec(module) is None:
            inputs.missing(f"{module} is not installed (the photos extra)")
    from pairviz_jax.data import photos

    assert photos.main(["--write", str(tmp_path), "--size", "32"]) == 0
    a, b = Image.open(tmp_path / "cat.png"), Image.open(tmp_path / "coffee_with_cat.png")
    pair = photos.readme_pair(32)
    np.testing.assert_array_equal(np.asarray(a), pair.a)
    np.testing.assert_array_equal(np.asarray(b), pair.b)
    assert pair.ids[:2] == ("chelsea", "coffee")
    classes = sorted(os.listdir(tmp_path / "gallery"))
    assert classes == sorted(photos.names())
    for c in classes:
        assert sorted(os.listdir(tmp_path / "gallery" / c)) == ["0.png", "1.png", "2.png"]
    assert "wrote 26 images" in capsys.readouterr().out


def test_photos_write_refuses_a_file(tmp_path):
    import pytest

    from pairviz_jax.data import photos

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as e:
        photos.main(["--write", str(tmp_path / "f")])
    assert e.value.code == 2


def test_tools_import_nothing_from_tests():
    for name in sorted(os.listdir(os.path.join(ROOT, "tools"))):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(ROOT, "tools", name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "tests", f"tools/{name}"
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "tests" for a in node.names), f"tools/{name}"
