"""``visualize.py batch`` and ``visualize.py evaluate`` on a tiny model."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import visualize
from pairviz_jax import batch, explain, runs
from pairviz_jax.data import preprocess
from pairviz_jax.models import ViT, decode_variant
from pairviz_jax.runs import LoadedModel


@pytest.fixture(scope="module")
def loaded():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    mean, std = preprocess.NORMALIZATION["demo"]
    return LoadedModel(model, variables, (16, 16), mean, std, "tiny")


@pytest.fixture
def tiny_model(loaded, monkeypatch, tmp_path_factory):
    monkeypatch.setattr(runs, "model_from_args", lambda args, prefix="": loaded)
    # --weights must name a file (checked before loading); the loader is replaced.
    here = tmp_path_factory.mktemp("weights")
    for name in ("unused.npz", "w.npz"):
        (here / name).write_bytes(b"")
    monkeypatch.chdir(here)
    return loaded


def test_batch_subcommand_writes_and_resumes(tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["batch", "--weights", "unused.npz", "--images", "demo:test:10", "--all-pairs"]
    argv += ["--out", out, "--shard-size", "16", "--png", "2"]
    assert visualize.main(argv) == 0
    assert capsys.readouterr().out.strip() == os.path.join(out, "manifest.json")
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["summary"]["written"] == 45 and len(manifest["shards"]) == 3
    assert sorted(os.listdir(os.path.join(out, "png"))) == ["000000000.png", "000000001.png"]
    res = batch.BatchResults(out)
    first = res.get(0)
    assert (first["a"], first["b"]) == ("demo:test:0", "demo:test:1")
    assert first["maps_a"].shape == (4, 4) and np.isfinite(first["score"])
    assert visualize.main(argv) == 0  # done already: nothing recomputed
    assert "already complete" in capsys.readouterr().err


def test_batch_subcommand_bad_input_is_one_line(tiny_model, tmp_path, capsys):
    argv = ["batch", "--weights", "w.npz", "--pairs", str(tmp_path / "nope.csv")]
    assert visualize.main([*argv, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "nope.csv" in err and err.count("\n") == 1
    argv = ["batch", "--weights", "w.npz", "--images", "demo:test:5", "--out", str(tmp_path)]
    assert visualize.main(argv) == 1
    assert "--top-k" in capsys.readouterr().err


def test_batch_subcommand_method_switch(tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["batch", "--weights", "w.npz", "--images", "demo:test:3", "--all-pairs"]
    assert visualize.main([*argv, "--out", out, "--method", "chefer"]) == 0
    job = json.load(open(os.path.join(out, "job.json")))
    assert job["fingerprint"]["method"] == "chefer"
    first = batch.BatchResults(out).get(0)
    loader = batch.ImageLoader(16, "demo")
    xa, xb = (jnp.asarray(loader(first[k]))[None] for k in ("a", "b"))
    ref = explain.paired_maps(tiny_model.model, tiny_model.variables, xa, xb, method="chefer")
    scale = float(np.abs(ref["map_a"]).max())
    np.testing.assert_allclose(first["maps_a"], ref["map_a"][0], atol=2e-3 * scale)
    capsys.readouterr()
    assert visualize.main([*argv, "--out", str(tmp_path / "o2"), "--method", "lrp"]) == 1
    err = capsys.readouterr().err
    assert "unknown method 'lrp'" in err and err.count("\n") == 1


def test_evaluate_subcommand_prints_the_table_and_plots(tiny_model, tmp_path, capsys):
    png = str(tmp_path / "curves.png")
    argv = ["evaluate", "--weights", "w.npz", "--pairs", "3", "--steps", "2", "--out", png]
    assert visualize.main(argv) == 0
    out = capsys.readouterr().out
    assert "| paired, authors (R @ gamma; Black et al. 2022) |" in out and "pointing_game" in out
    assert "transpose better than rollout by: deletion_auc" in out
    assert "shared_share" not in out
    assert out.strip().endswith(png) and os.path.getsize(png) > 1000
    # The distractor images need 32 px; this model takes 16: one clear line, exit 1.
    assert visualize.main(argv + ["--distractor"]) == 1
    assert "image_size >= 32" in capsys.readouterr().err


def test_shard_size_default_is_the_benchmarked_one():
    """The README's batch figures were measured with the benchmark's shard size; the
    command's default was 16,384 (1.8x slower on the README's job)."""
    import importlib.util

    p = visualize.build_parser()._subparsers._group_actions[0].choices["batch"]
    cli_default = next(a.default for a in p._actions if a.dest == "shard_size")
    spec = importlib.util.spec_from_file_location(
        "bench_batch",
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "batch.py"),
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench_default = bench.build_parser().get_default("shard_size")
    lib_default = batch.BatchOptions().shard_size
    assert cli_default == lib_default == bench_default == batch.DEFAULT_SHARD_SIZE == 65536


def test_default_shard_size_takes_the_tile_kernel_on_the_readme_job():
    """10^6 random pairs among 1,000 demo images (8 x 8 tokens, 64-d): with shards of the
    default size each shard is dense enough for the per-block product ("tile"); at 16,384
    pairs per shard it fell back to gathering every pair's W ("gather")."""
    from jax.sharding import Mesh

    from pairviz_jax.batch.kernels import DATA_AXIS, Compute

    n_img, n_tok, emb = 1000, 64, 64
    w = np.zeros((n_img, n_tok, emb), np.float32)
    mesh = Mesh(np.asarray(jax.local_devices()[:1]), (DATA_AXIS,))
    compute = Compute(w, np.zeros((n_img, emb), np.float32), (8, 8), mesh, 256, "auto")
    pairs = np.random.default_rng(0).integers(0, n_img, (batch.DEFAULT_SHARD_SIZE, 2))
    assert compute._use_tile(pairs.astype(np.int32))
    assert not compute._use_tile(pairs[:16384].astype(np.int32))


def test_batch_applies_the_minimum_image_size_of_pair(tiny_model, tmp_path, capsys):
    """Images smaller than one patch (4 x 4 here) are unreadable for batch, as for pair."""
    from PIL import Image

    from pairviz_jax.data import demo

    Image.fromarray(demo.render_example("test", 0, image_size=16)["image"]).save(
        tmp_path / "ok.png"
    )
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.zeros((1, 5000, 3), np.uint8)).save(tmp_path / "thin.png")
    (tmp_path / "pairs.csv").write_text("ok.png,tiny.png\nok.png,thin.png\nok.png,ok.png\n")
    out = str(tmp_path / "out")
    argv = ["batch", "--weights", "w.npz", "--pairs", str(tmp_path / "pairs.csv"), "--out", out]
    assert visualize.main([*argv, "--allow-skips"]) == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["summary"]["written"] == 1 and manifest["summary"]["skipped"] == 2
    unreadable = open(os.path.join(out, "unreadable.txt")).read()
    assert "3x3 pixels is smaller than one 4x4 patch" in unreadable
    assert "5000x1 pixels is smaller than one 4x4 patch" in unreadable
    capsys.readouterr()
    # pair refuses the same images with the same words.
    rc = visualize.main(["pair", str(tmp_path / "thin.png"), "demo:test:0", "--weights", "w.npz"])
    assert rc == 1 and "5000x1 pixels is smaller than one 4x4 patch" in capsys.readouterr().err


def test_stale_temporary_files_are_removed_on_the_next_run(tiny_model, tmp_path):
    """A kill while the pairs file was parsed left pairs.npy.tmp<pid> (32 MB at 4 x 10^6)."""
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    stale = [out / "pairs.npy.tmp4242", out / "shards" / "000001.maps_a.npy.tmp77"]
    stale += [out / "unreadable.txt.p3", out / "pairs.npy.tmp-0123456789ab"]
    for path in stale:
        path.write_bytes(b"x" * 100)
    (out / "shards" / ".000002.0123456789ab.tmp").mkdir()  # a dead worker's shard
    stale.append(out / "shards" / ".000002.0123456789ab.tmp")
    keep = out / "notes.tmp.txt"  # not a temporary name of the job
    keep.write_text("mine")
    argv = ["batch", "--weights", "w.npz", "--images", "demo:test:6", "--all-pairs"]
    assert visualize.main([*argv, "--out", str(out)]) == 0
    assert [p for p in stale if p.exists()] == []
    assert keep.read_text() == "mine"


def test_skipped_pairs_fail_the_command_unless_allowed(tiny_model, tmp_path, capsys):
    """A pairs file with a missing image: the job completes, but the last line says how many
    pairs were skipped and why (the file, how its path was resolved) and the exit status is
    1; --allow-skips accepts them (exit 0, the same line as a warning). On the old code:
    exit 0 and "pairs 100.0%"."""
    from PIL import Image

    from pairviz_jax.data import demo

    for i in range(2):
        image = demo.render_example("test", i, image_size=16)["image"]
        Image.fromarray(image).save(tmp_path / f"im{i}.png")
    (tmp_path / "pairs.csv").write_text("im0.png,im1.png\nim1.png,gone.png\nim0.png,im0.png\n")
    out = str(tmp_path / "out")
    argv = ["batch", "--weights", "w.npz", "--pairs", str(tmp_path / "pairs.csv"), "--out", out]
    assert visualize.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "1 of 3 pairs skipped: 1 unreadable images" in err[-1]
    assert str(tmp_path / "gone.png") in err[-1] and "resolved against" in err[-1]
    assert "--allow-skips" in err[-1]
    assert json.load(open(os.path.join(out, "manifest.json")))["summary"]["skipped"] == 1
    assert visualize.main([*argv, "--allow-skips"]) == 0  # complete: accepted, not redone


def test_another_job_on_the_same_out_is_refused_in_one_line(tiny_model, tmp_path, capsys):
    """A second, different job on a finished job's --out: exit 1, one line naming the folder
    and what differs, nothing of the first job touched (two jobs started together:
    test_batch.test_two_different_jobs_on_one_directory_one_is_refused). A bad pairs file
    fixed and run again is the directory's first job, not another one (job.json is now
    written first: the refusal must not lock a directory out after an input error)."""
    out = str(tmp_path / "out")
    argv = ["batch", "--weights", "w.npz", "--all-pairs", "--out", out]
    assert visualize.main([*argv, "--images", "demo:test:4"]) == 0
    before = sorted(os.listdir(os.path.join(out, "shards")))
    capsys.readouterr()
    assert visualize.main([*argv, "--images", "demo:test:5"]) == 1
    err = capsys.readouterr().err
    assert "holds a different job" in err and "images_sha256" in err and err.count("\n") == 1
    assert sorted(os.listdir(os.path.join(out, "shards"))) == before
    assert batch.BatchResults(out).written() == 6
    bad = tmp_path / "pairs.csv"
    bad.write_text("demo:test:0,demo:test:1\ndemo:test:2\n")
    argv = ["batch", "--weights", "w.npz", "--pairs", str(bad), "--out", str(tmp_path / "o2")]
    assert visualize.main(argv) == 1 and "row 2" in capsys.readouterr().err
    bad.write_text("demo:test:0,demo:test:1\ndemo:test:2,demo:test:3\n")
    assert visualize.main(argv) == 0
