"""visualize.py and the run loader with the pretrained families' files and folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import visualize
from pairviz_jax import checkpoints, runs
from pairviz_jax.data.demo import render_example

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in (0, 3):
        path = d / f"{i}.png"
        Image.fromarray(render_example("test", i, image_size=32)["image"]).save(path)
        paths.append(str(path))
    return paths


def _run(argv, capsys):
    rc = visualize.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    "folder,norm,pool",
    [
        ("dinov2_hf", "imagenet", "tok"),
        ("clip_hf", "clip", "tok"),
        ("siglip_hf", "half", "map"),
    ],
)
def test_weight_folders_load_with_their_family_defaults(folder, norm, pool):
    m = runs.load_weights(os.path.join(FIX, folder), image_size=16)
    expected = checkpoints.NORMALIZATIONS[norm]
    np.testing.assert_allclose(m.mean, expected[0])
    np.testing.assert_allclose(m.std, expected[1])
    assert m.model.pool_type == pool
    # --normalization still wins.
    m2 = runs.load_weights(os.path.join(FIX, folder), image_size=16, normalization="imagenet")
    np.testing.assert_allclose(m2.mean, (0.485, 0.456, 0.406))


def test_pair_with_a_dinov2_folder_for_every_pooling(images, tmp_path, capsys):
    argv = ["pair", *images, "--weights", os.path.join(FIX, "dinov2_hf"), "--image-size", 16]
    pictures = {}
    for pool in ("tok", "gap", "gap_tok"):
        out = tmp_path / f"{pool}.png"
        rc, written, err = _run([*argv, "--pool-type", pool, "--out", out], capsys)
        assert rc == 0, err
        assert written.strip() == str(out)
        pictures[pool] = np.asarray(Image.open(out).convert("RGB"), np.int32)
    # Each pooling's split gives other maps (and scores) for the same pair.
    assert np.abs(pictures["tok"] - pictures["gap"]).max() > 0
    assert np.abs(pictures["gap_tok"] - pictures["gap"]).max() > 0


def test_a_directory_that_is_neither_a_run_nor_a_model_folder(images, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(["pair", *images, "--weights", empty, "--out", tmp_path / "x.png"], capsys)
    assert rc == 1 and len(err.splitlines()) == 1
    assert "not a Hugging Face model folder" in err and str(empty) in err
