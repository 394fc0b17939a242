"""Correspondence against geometry (``evaluate.geometry``): the truth, the measure, a tiny run."""

import types

import numpy as np
import pytest

from pairviz_jax.data import photos
from pairviz_jax.evaluate import geometry
from pairviz_jax.models import ViT, decode_variant
from tests import inputs
from tests.test_vit_families import _random_variables

SIZE, PATCH = 32, (4, 4)  # an 8 x 8 grid


def test_true_matches_follow_the_pasted_box():
    mask = np.zeros((SIZE, SIZE), bool)
    mask[8:24, 8:24] = True  # X in A: top 8, left 8, 16 x 16 px
    target, valid = geometry.true_matches((8, 8, 16, 16), (0, 16, 8, 8), mask, (8, 8), PATCH)
    assert valid.reshape(8, 8)[2:6, 2:6].all() and valid.sum() == 16
    t = target.reshape(8, 8, 2)
    # A's patch (2, 2), centre (10, 10): 1/8 into the box -> B pixel (1, 17) -> patch (0, 4)
    assert tuple(t[2, 2]) == (0, 4)
    # A's patch (5, 5), centre (22, 22): 7/8 into the box -> B pixel (7, 23) -> patch (1, 5)
    assert tuple(t[5, 5]) == (1, 5)


def test_accuracy_counts_best_matches_within_one_patch():
    grid = (8, 8)
    n = 64
    rows, cols = np.divmod(np.arange(n), 8)
    truth = np.stack([rows, cols], -1)[None]  # identity
    valid = np.ones((1, n), bool)
    for shift, want in ((0, 1.0), (1, 1.0), (2, 0.0)):
        moved = np.clip(cols + shift, 0, 7) if shift < 2 else (cols + 2) % 8
        corr = np.zeros((1, n, n))
        corr[0, np.arange(n), rows * 8 + moved] = 1.0
        got = geometry.correspondence_accuracy(corr, truth, valid, grid)
        assert got.shape == (1,) and got[0] == pytest.approx(want), shift
    valid[:] = False
    assert np.isnan(geometry.correspondence_accuracy(corr, truth, valid, grid)[0])


@pytest.fixture(scope="module")
def loaded():
    if len(photos.available("a")) < 4:
        inputs.missing("the photos' packages (scikit-image, scikit-learn) are not installed")
    model = ViT(**decode_variant("Tiny/4"), class_token=True, pool_type="tok", num_registers=1)
    # Parameters drawn by numpy from the traced shapes (an eager init compiles op by op).
    variables = _random_variables(model, np.zeros((1, SIZE, SIZE, 3), np.float32), seed=1)
    return types.SimpleNamespace(
        model=model, variables=variables, image_size=(SIZE, SIZE), mean=None, std=None,
        label="tiny",
    )  # fmt: skip


KINDS = ("rollout", "token", "bilrp_k4", "patch_cosine")  # (exact bilrp: test_second_order)


def test_pairs_hold_the_true_matches_of_both_objects(loaded):
    d = geometry.geometry_pairs(range(2), split="a", image_size=SIZE, patch=PATCH)
    assert d["a"].shape == (2, SIZE, SIZE, 3) and d["b"].shape == (2, 2, SIZE, SIZE, 3)
    assert d["target"].shape == (2, 2, 64, 2) and d["valid"].shape == (2, 2, 64)
    assert d["valid"].sum(-1).min() >= 2  # every object covers a few patches of A
    assert not (d["valid"][:, 0] & d["valid"][:, 1]).any()  # X and Y do not overlap


def test_an_image_against_itself_matches_every_patch_to_itself(loaded):
    d = geometry.geometry_pairs(range(1), split="a", image_size=SIZE, patch=PATCH)
    a = d["a"]
    got = geometry.chunk_corrs(
        loaded.model, loaded.variables, a, np.stack([a, a], 1), ("patch_cosine",)
    )["patch_cosine"]
    rows, cols = np.divmod(np.arange(64), 8)
    truth = np.broadcast_to(np.stack([rows, cols], -1), (2, 64, 2))
    acc = geometry.correspondence_accuracy(
        got["corr"][0], truth, np.ones((2, 64), bool), (8, 8), tolerance=0
    )
    np.testing.assert_array_equal(acc, 1.0)


def test_a_run_conserves_resumes_and_reports(loaded, tmp_path):
    lines = []
    r = geometry.evaluate_geometry(
        loaded, 2, kinds=KINDS, chunk=1, cache_dir=str(tmp_path), log=lines.append
    )
    assert list(r.accuracy) == list(KINDS) and len(r) == 2
    for k in KINDS:
        acc = np.asarray(r.accuracy[k])
        assert acc.shape == (2,) and ((acc >= 0) & (acc <= 1)).all()
    eps = np.finfo(np.float32).eps
    for k in ("rollout", "token", "bilrp_k4"):  # sum C + rest terms = the cosine
        assert np.abs(r.conservation[k]).max() < 64 * eps * 64 * 64, k
    table = r.table()
    assert "second-order C" in table and "[rank 4]" in table and "± " in table
    assert any("2/2 triples (computed" in line for line in lines)
    again = geometry.evaluate_geometry(
        loaded, 2, kinds=KINDS, chunk=1, cache_dir=str(tmp_path), log=lines.append
    )
    assert any("from the cache" in line for line in lines)
    for k in KINDS:
        np.testing.assert_array_equal(again.accuracy[k], r.accuracy[k])


def test_bad_requests_say_what_was_expected(loaded):
    with pytest.raises(ValueError, match="unknown correspondence kind 'chefer'"):
        geometry.evaluate_geometry(loaded, 1, kinds=("chefer",))
    with pytest.raises(ValueError, match="bilrp_l5: block 5 > the model's depth 2"):
        geometry.evaluate_geometry(loaded, 1, kinds=("bilrp_l5",))
    with pytest.raises(ValueError, match="split='c'"):
        geometry.evaluate_geometry(loaded, 1, split="c")
    assert geometry.parse_kind("bilrp_l6_k64") == ("bilrp", {"layer": 6, "rank": 64})


def test_evaluate_geometry_subcommand_prints_the_table(loaded, tmp_path, monkeypatch, capsys):
    import visualize
    from pairviz_jax import runs

    monkeypatch.setattr(runs, "model_from_args", lambda args, prefix="": loaded)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.npz").write_bytes(b"")  # --weights must name a file; the loader is replaced
    argv = ["evaluate", "--weights", "w.npz", "--geometry", "--pairs", "1", "--method", "bilrp_k4"]
    assert visualize.main([*argv, "--out", str(tmp_path / "g.png")]) == 0
    captured = capsys.readouterr()
    assert "correspondence against geometry, photo half a" in captured.out
    assert "[rank 4] |" in captured.out and "| cosine of final patch tokens" in captured.out
    assert "geometry half a: 1/1 triples" in captured.err
    bad = ["evaluate", "--weights", "w.npz", "--geometry", "--method", "lrp"]
    assert visualize.main(bad) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--method lrp: unknown correspondence kind 'lrp'" in err[0], err
