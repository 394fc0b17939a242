"""visualize.py end to end on a tiny ViT: every subcommand, both model sources, bad input.

The run directory is written with the training library's own ``Checkpointer`` and
``TrainState`` (the format ``train.py`` writes); the weight files with
``pairviz_jax.checkpoints.save``. Subcommands run in-process (``visualize.main``) so the
compiled functions are shared; two runs go through a real subprocess to check that
errors reach the terminal as one line without a traceback. The figure tests read the maps
back out of the drawn figure and compare them with ``explain.paired_maps`` /
``explain.rollout_map`` / a per-member sum computed here (swapped or wrong maps fail).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import visualize
from pairviz_jax import checkpoints, explain, plotting, runs
from pairviz_jax.models import ResNet, ViT
from pairviz_jax.models.vit import decode_variant
from pairviz_jax.train import Checkpointer, build_model, create_train_state, make_optimizer
from pairviz_jax.train.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16  # the demo dataset's smallest size; a 4 x 4 token grid with patch 4


def _random_params(model, size, seed):
    """Random variables of ``model``'s shapes (compiling ``model.init`` is slower)."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32) * 0.3), shapes
    )


def _config(variant="mu/4", total=3):
    c = base_config()
    c.model.variant = variant
    c.model.proj_dim = 8
    c.input.name = "demo"
    c.input.image_size = SIZE
    c.num_classes = 24
    c.total_steps = total
    return c


def make_run(
    path, steps=(1, 2, 3), *, saved_variant="mu/4", config_variant="mu/4", total=None, final=True
):
    """A train.py run directory whose checkpoints hold ``saved_variant`` parameters.

    The run is configured to end at ``total`` (default the last step); ``final`` writes its
    final evaluation into metrics.jsonl (a finished run, as train.py leaves it).
    """
    total = steps[-1] if total is None else total
    model = build_model(_config(saved_variant).model)
    config = _config(config_variant, total)
    tx = make_optimizer(config)
    ckpt = Checkpointer(os.path.join(path, "checkpoints"), save_every=1, async_save=False)
    for step in steps:
        params = {
            "model": _random_params(model, SIZE, step)["params"],
            "head": {"weights": jnp.zeros((24, 8), jnp.float32)},
        }
        ckpt.save(step, create_train_state(params, tx), None, config, force=True)
    ckpt.close()
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    if final:
        with open(os.path.join(path, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": total, "eval/recall@1": 0.5}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    vit = ViT(**decode_variant("mu/4"), proj_dim=8)
    checkpoints.save(d / "vit.npz", _random_params(vit, SIZE, 7), vit)
    tok = ViT(**decode_variant("mu/4"), proj_dim=8, class_token=True, pool_type="tok")
    checkpoints.save(d / "vit_tok.npz", _random_params(tok, SIZE, 9), tok)
    resnet = ResNet(block_sizes=(1, 1), width=8, num_groups=2, proj_dim=8)
    checkpoints.save(d / "resnet.npz", _random_params(resnet, SIZE, 8), resnet)
    return {k: str(d / f"{k}.npz") for k in ("vit", "vit_tok", "resnet")}


@pytest.fixture(scope="module")
def folder_gallery(tmp_path_factory):
    """Class folders a/ and b/ with 3 demo images each, written as PNG files."""
    from pairviz_jax.data.demo import render_example

    root = tmp_path_factory.mktemp("gallery")
    for cls, indices in (("a", (0, 24, 48)), ("b", (1, 25, 49))):
        os.makedirs(root / cls)
        for i in indices:
            image = render_example("test", i, image_size=32)["image"]
            Image.fromarray(image).save(root / cls / f"{i}.png")
    return str(root)


@pytest.fixture
def captured(monkeypatch):
    """The figures visualize.py saves: (number of axes, size in pixels, the figure)."""
    figs = []
    save = plotting.save_figure

    def spy(fig, path, **kw):
        figs.append((len(fig.axes), tuple(fig.get_size_inches() * fig.dpi), fig))
        return save(fig, path, **kw)

    monkeypatch.setattr(plotting, "save_figure", spy)
    return figs


def _check_png(path, captured_layout, n_axes):
    axes, (w, h), _ = captured_layout
    assert os.path.isfile(path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (round(w), round(h))
    assert axes == n_axes


def _heat(ax):
    """The map drawn on a modern-style overlay panel (the image above the greyscale)."""
    return np.asarray(ax.images[-1].get_array(), np.float64)


def _prepared(m, ref):
    return m.prepare(plotting.read_example(ref, m).image[None])


def _reference_pair(m, a, b, convention="authors"):
    """Upsampled maps and score of ``explain.paired_maps``: the method in one call."""
    out = explain.paired_maps(
        m.model, m.variables, _prepared(m, a), _prepared(m, b), convention=convention
    )
    return (
        np.asarray(out["upsampled_a"][0]),
        np.asarray(out["upsampled_b"][0]),
        float(out["score"][0]),
    )


def _run(argv, capsys):
    rc = visualize.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- subcommands


@pytest.mark.parametrize("style, n_axes", [("modern", 5), ("paper", 4)])
def test_pair(run_dir, tmp_path, capsys, captured, style, n_axes):
    out = tmp_path / "pair.png"
    argv = ["pair", "demo:test:0", "demo:test:24", "--workdir", run_dir, "--out", out]
    rc, stdout, err = _run([*argv, "--style", style, "--pdf"], capsys)
    assert rc == 0, err
    assert stdout.split() == [str(out), str(tmp_path / "pair.pdf")]
    assert os.path.getsize(tmp_path / "pair.pdf") > 0
    _check_png(out, captured[0], n_axes)  # A, A|B, B|A, B (+ colour bar)
    fig = captured[0][2]
    m = plotting.load_run(run_dir)
    map_a, map_b, score = _reference_pair(m, "demo:test:0", "demo:test:24")
    assert f"{score:.3f}" in fig._suptitle.get_text()
    assert m.label.endswith(" @ step 3") and m.label in fig._suptitle.get_text()  # model, step
    if style == "modern":
        np.testing.assert_allclose(_heat(fig.axes[1]), map_a, rtol=1e-4, atol=1e-6)  # A|B
        np.testing.assert_allclose(_heat(fig.axes[2]), map_b, rtol=1e-4, atol=1e-6)  # B|A
    else:
        a = plotting.read_example("demo:test:0", m).image
        want = plotting.paper_overlay(a, map_a)
        np.testing.assert_allclose(fig.axes[1].images[0].get_array(), want, atol=1)


def test_pair_from_weight_file_and_image_files(
    weight_files, folder_gallery, tmp_path, capsys, captured
):
    out = tmp_path / "pair_w.png"
    a, b = (os.path.join(folder_gallery, "a", f) for f in ("0.png", "24.png"))
    argv = ["pair", a, b, "--weights", weight_files["vit"], "--image-size", SIZE, "--out", out]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    _check_png(out, captured[0], 5)


def test_matrix(run_dir, tmp_path, capsys, captured):
    out = tmp_path / "matrix.png"
    refs = ["demo:test:0", "demo:test:24", "demo:test:7"]
    rc, _, err = _run(["matrix", *refs, "--workdir", run_dir, "--out", out], capsys)
    assert rc == 0, err
    _check_png(out, captured[0], 3 * 3 + 1)
    fig = captured[0][2]
    m = plotting.load_run(run_dir)
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            map_i, _, score = _reference_pair(m, refs[i], refs[j])
            ax = fig.axes[i * 3 + j]  # row i, column j: image i's map with respect to j
            np.testing.assert_allclose(_heat(ax), map_i, rtol=1e-4, atol=1e-6)
            assert ax.get_title().endswith(f"{score:.3f}")


@pytest.mark.parametrize("method", ["chefer", "conservative"])
def test_method_switch_draws_that_methods_maps(run_dir, tmp_path, capsys, captured, method):
    """pair and matrix with --method draw explain.paired_maps(method=...)'s maps, both ways."""
    refs = ["demo:test:0", "demo:test:24", "demo:test:7"]
    m = plotting.load_run(run_dir)
    want = explain.paired_maps(
        m.model, m.variables, _prepared(m, refs[0]), _prepared(m, refs[1]), method=method
    )
    rc, _, err = _run(
        ["pair", *refs[:2], "--workdir", run_dir, "--method", method, "--out", tmp_path / "p.png"],
        capsys,
    )
    assert rc == 0, err
    fig = captured[0][2]
    assert f"{method} maps" in fig._suptitle.get_text()
    np.testing.assert_allclose(_heat(fig.axes[1]), want["upsampled_a"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_heat(fig.axes[2]), want["upsampled_b"][0], rtol=1e-4, atol=1e-6)
    paper = _reference_pair(m, *refs[:2])
    assert np.abs(_heat(fig.axes[1]) - paper[0]).max() > 1e-3  # not the paper's map
    rc, _, err = _run(
        ["matrix", *refs, "--workdir", run_dir, "--method", method, "--out", tmp_path / "m.png"],
        capsys,
    )
    assert rc == 0, err
    grid = captured[1][2]
    np.testing.assert_allclose(_heat(grid.axes[1]), want["upsampled_a"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_heat(grid.axes[3]), want["upsampled_b"][0], rtol=1e-4, atol=1e-6)
    rc, _, err = _run(
        ["pair", *refs[:2], "--workdir", run_dir, "--method", method, "--convention", "transpose"],
        capsys,
    )
    assert rc == 1 and "--convention applies to --method paper" in err


def test_retrieve_with_compare_and_green_borders(
    run_dir, weight_files, folder_gallery, tmp_path, capsys, captured
):
    out = tmp_path / "retrieve.png"
    query = os.path.join(folder_gallery, "a", "0.png")
    argv = ["retrieve", query, "--gallery", folder_gallery, "--top", 4, "--workdir", run_dir]
    argv += ["--compare", weight_files["resnet"], "--compare-image-size", SIZE, "--out", out]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    _check_png(out, captured[0], 2 * (1 + 4) + 2)  # ViT row, ResNet row, a colour bar each
    fig = captured[0][2]
    models = [
        plotting.load_run(run_dir),
        plotting.load_weights(weight_files["resnet"], image_size=SIZE),
    ]
    for row, m in enumerate(models):
        # Brute force: every gallery image's cosine with the query, the query left out.
        gallery = plotting.open_gallery(folder_gallery, m)
        q = m.embed(plotting.read_example(query, m).image[None])[0]
        emb = m.embed(gallery.images())
        cos = emb @ q / np.linalg.norm(emb, axis=1) / np.linalg.norm(q)
        keys = [e.key for e in gallery.examples]
        cos[keys.index(os.path.abspath(query))] = -np.inf
        best = np.argsort(-cos, kind="stable")[:4]
        axes = fig.axes[row * 5 : row * 5 + 5]
        assert axes[0].get_ylabel() == m.label
        for ax, g in zip(axes[1:], best, strict=True):
            name = gallery.examples[g].name
            assert ax.get_title() == f"{name}\ncosine {cos[g]:.3f}"
            want, _, _ = _reference_pair(m, gallery.examples[g].key, query)
            np.testing.assert_allclose(_heat(ax), want, rtol=1e-3, atol=1e-5)


def test_retrieval_rows_mark_matching_labels(run_dir, folder_gallery):
    m = plotting.load_run(run_dir)
    gallery = plotting.open_gallery(folder_gallery, m)
    query = plotting.read_example(os.path.join(folder_gallery, "a", "0.png"), m, label="a")
    row = plotting.retrieval_row(m, query, gallery, top=5)
    assert len(row.results) == 5  # the query itself is not in its results
    names = row.names
    labels = {e.name: e.label for e in gallery.examples}
    assert sorted(labels) == ["a/0", "a/24", "a/48", "b/1", "b/25", "b/49"]  # class/file
    assert "a/0" not in names
    assert row.correct == [labels[n] == "a" for n in names]
    assert sum(row.correct) == 2 and row.scores == sorted(row.scores, reverse=True)
    np.testing.assert_allclose(
        row.scores, plotting.rank(m, query, gallery, 5)[1], rtol=1e-4, atol=1e-5
    )


def test_class_map(run_dir, tmp_path, capsys, captured):
    out = tmp_path / "class_map.png"
    argv = ["class-map", "demo:test:0", "demo:test:1", "--gallery", "demo:test"]
    argv += ["--gallery-size", 96, "--workdir", run_dir, "--out", out]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    _check_png(out, captured[0], 2 * 2 + 2)  # a colour bar under each map
    fig = captured[0][2]
    m = plotting.load_run(run_dir)
    for col, (q, label) in enumerate(((0, 24), (1, 25))):
        # Section 4.2: the query's maps summed over the other gallery images of its class
        # (demo:test:i has class 24 + i % 24; the first 96 images: 4 per class).
        members = [i for i in range(96) if 24 + i % 24 == label and i != q]
        want = sum(_reference_pair(m, f"demo:test:{q}", f"demo:test:{g}")[0] for g in members)
        ax = fig.axes[2 + col]
        np.testing.assert_allclose(_heat(ax), want, rtol=1e-4, atol=1e-5)
        # Each class map on its own colour scale: a shared one left weak maps one colour.
        assert ax.images[-1].norm.vmin == pytest.approx(want.min(), rel=1e-4, abs=1e-6)
        assert ax.images[-1].norm.vmax == pytest.approx(want.max(), rel=1e-4, abs=1e-6)
        assert f"class {label}" in fig.axes[col].get_title()
    assert m.label in fig._suptitle.get_text()


def test_training(run_dir, tmp_path, capsys, captured):
    out = tmp_path / "training.png"
    argv = ["training", "demo:test:0", "--gallery", "demo:test", "--gallery-size", 48]
    argv += ["--workdir", run_dir, "--top", 3, "--out", out]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    _check_png(out, captured[0], 3 * (1 + 3) + 3)  # steps 1, 2, 3
    fig = captured[0][2]
    assert [fig.axes[r * 4].get_ylabel() for r in range(3)] == ["step 1", "step 2", "step 3"]
    # Each row's maps come from its own checkpoint.
    for r, step in enumerate((1, 2, 3)):
        m = plotting.load_run(run_dir, step)
        name, score = fig.axes[r * 4 + 1].get_title().split("\ncosine ")
        g = f"demo:test:{int(name.split()[-1])}"
        want, _, s_ref = _reference_pair(m, g, "demo:test:0")
        np.testing.assert_allclose(_heat(fig.axes[r * 4 + 1]), want, rtol=1e-3, atol=1e-5)
        assert score == f"{s_ref:.3f}"
    rc, _, err = _run([*argv, "--steps", "1,3"], capsys)
    assert rc == 0, err
    _check_png(out, captured[1], 2 * (1 + 3) + 2)


def test_rollout(run_dir, tmp_path, capsys, captured):
    out = tmp_path / "rollout.png"
    argv = ["rollout", "demo:test:0", "demo:test:24", "--workdir", run_dir, "--out", out]
    rc, _, err = _run([*argv, "--step", 2], capsys)
    assert rc == 0, err
    _check_png(out, captured[0], 2 * 3 + 2)
    fig = captured[0][2]
    m = plotting.load_run(run_dir, 2)
    f = explain.features(
        m.model,
        m.variables,
        jnp.concatenate([_prepared(m, "demo:test:0"), _prepared(m, "demo:test:24")]),
        head_fusion="mean",
    )
    roll = np.asarray(explain.upsample(explain.rollout_map(f), m.image_size))
    map_a, map_b, _ = _reference_pair(m, "demo:test:0", "demo:test:24")
    np.testing.assert_allclose(_heat(fig.axes[1]), roll[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_heat(fig.axes[2]), map_a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_heat(fig.axes[4]), roll[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_heat(fig.axes[5]), map_b, rtol=1e-4, atol=1e-6)
    assert "@ step 2" in fig._suptitle.get_text()


def test_rollout_needs_attention(weight_files, tmp_path, capsys):
    argv = ["rollout", "demo:test:0", "demo:test:1", "--weights", weight_files["resnet"]]
    rc, _, err = _run([*argv, "--image-size", SIZE, "--out", tmp_path / "r.png"], capsys)
    assert rc == 1 and "no attention" in err and len(err.splitlines()) == 1


def test_new_subcommands_are_a_few_lines(monkeypatch, capsys):
    def add(p):
        p.add_argument("word")

    command = visualize.Command("say a word", add, lambda args: [args.word], ())
    monkeypatch.setitem(visualize.COMMANDS, "echo", command)
    assert visualize.main(["echo", "hi"]) == 0
    assert capsys.readouterr().out.split() == ["hi"]


# ----------------------------------------------------------------------------- image modes


def test_image_modes_are_converted(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    grey16 = Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16))
    palette = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).convert("P")
    rgba = Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L")
    paths = []
    for name, im in (("g16", grey16), ("p", palette), ("rgba", rgba), ("l", grey)):
        paths.append(tmp_path / f"{name}.png")
        im.save(paths[-1])
    out = tmp_path / "modes.png"
    rc, _, err = _run(["matrix", *paths, "--workdir", run_dir, "--out", out], capsys)
    assert rc == 0, err
    assert os.path.isfile(out)


# ----------------------------------------------------------------------------- bad input


def _error(argv, capsys, *needles, rc=1):
    code = visualize.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == rc
    assert len(err.splitlines()) == 1, err
    assert err.startswith("visualize.py") and "Traceback" not in err
    for needle in needles:
        assert str(needle) in err, err
    return err


def test_missing_image_file(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    _error(["pair", missing, "demo:test:0", "--workdir", run_dir], capsys, missing, "no such file")


def test_corrupt_image(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    _error(["pair", "demo:test:0", bad, "--workdir", run_dir], capsys, bad)


def test_image_smaller_than_one_patch(run_dir, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((3, 9, 3), np.uint8)).save(small)
    _error(
        ["pair", small, "demo:test:0", "--workdir", run_dir], capsys, small, "smaller than one 4x4"
    )


def test_checkpoint_that_does_not_match_its_config(tmp_path, capsys):
    run = make_run(tmp_path / "bad_run", steps=(5,), saved_variant="mu/4", config_variant="Tiny/4")
    err = _error(["pair", "demo:test:0", "demo:test:1", "--workdir", run], capsys, "does not match")
    assert "Tiny/4" in err and os.path.join("checkpoints", "5") in err


def test_run_errors(run_dir, tmp_path, capsys):
    pair = ["pair", "demo:test:0", "demo:test:1"]
    _error([*pair, "--workdir", tmp_path / "nowhere"], capsys, "--workdir", "no such directory")
    os.makedirs(tmp_path / "empty")
    _error([*pair, "--workdir", tmp_path / "empty"], capsys, "no checkpoints")
    _error([*pair, "--workdir", run_dir, "--step", 9], capsys, "--step 9", "available: 1, 2, 3")
    training = ["training", "demo:test:0", "--gallery", "demo:test", "--workdir", run_dir]
    _error([*training, "--steps", "1,7"], capsys, "--steps 1,7", "no checkpoint 7")
    _error([*training, "--steps", "one"], capsys, "--steps one", "expected integers")


def test_weight_file_errors(tmp_path, capsys):
    pair = ["pair", "demo:test:0", "demo:test:1"]
    _error([*pair, "--weights", tmp_path / "none.npz"], capsys, "--weights", "no such file")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint at all")
    _error([*pair, "--weights", junk], capsys, "--weights", junk)


def test_class_token_pooling_gives_paired_maps(weight_files, tmp_path, capsys):
    """A class-token model draws its exact token split; --pool-type gap the paper's."""
    argv = ["pair", "demo:test:0", "demo:test:1", "--weights", weight_files["vit_tok"]]
    rc, _, err = _run([*argv, "--out", tmp_path / "tok.png"], capsys)
    assert rc == 0, err
    rc, _, err = _run([*argv, "--out", tmp_path / "gap.png", "--pool-type", "gap"], capsys)
    assert rc == 0, err
    tok = np.asarray(Image.open(tmp_path / "tok.png"))
    gap = np.asarray(Image.open(tmp_path / "gap.png"))
    assert tok.shape == gap.shape and np.abs(tok.astype(int) - gap.astype(int)).max() > 0


def test_model_options(weight_files, capsys):
    assert plotting.parse_model_options(["num_groups=8", "keep_class_token=False", "x=ab"]) == {
        "num_groups": 8,
        "keep_class_token": False,
        "x": "ab",
    }
    argv = ["pair", "demo:test:0", "demo:test:1", "--weights", weight_files["resnet"]]
    _error([*argv, "--model-option", "num_groups"], capsys, "--model-option num_groups")
    # A ResNet with the wrong number of groups for its channels: named, with the fix.
    err = _error([*argv, "--model-option", "num_groups=3"], capsys, weight_files["resnet"])
    assert "num_groups" in err


def test_bad_dataset_references(run_dir, capsys):
    _error(["pair", "demo:test:99999", "demo:test:0", "--workdir", run_dir], capsys, "out of range")
    argv = ["retrieve", "demo:test:0", "--gallery", "nowhere", "--workdir", run_dir]
    _error(argv, capsys, "--gallery nowhere")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["pair", "a.png", "b.png", "--workdir", "w", "--frob"], "unrecognized option --frob"),
        (["pair", "a.png", "b.png"], "one of the arguments --workdir --weights is required"),
        (["pair", "a.png", "b.png", "--workdir", "w", "--step", "x"], "--step: invalid int"),
        (["pair", "a", "b", "--workdir", "w", "--style", "neon"], "--style: invalid choice"),
        ([], "required: SUBCOMMAND"),
    ],
)
def test_command_line_errors_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        visualize.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and needle in err, err


def test_option_values_are_checked(run_dir, capsys):
    pair = ["pair", "demo:test:0", "demo:test:1", "--workdir", run_dir]
    _error([*pair, "--cmap", "nocolours"], capsys, "--cmap nocolours")
    _error([*pair, "--alpha", "2"], capsys, "--alpha 2")


@pytest.mark.parametrize(
    "argv, rc, needle",
    [
        (["bogus-subcommand"], 2, "invalid choice"),
        (["pair", "missing_a.png", "missing_b.png", "--workdir", "."], 1, "missing_a.png"),
        (["pair", "demo:test:0", "demo:test:1", "--workdir", "."], 1, "no checkpoints"),
    ],
)
def test_terminal_sees_one_line_and_exit_status(argv, rc, needle):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "visualize.py"), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,  # a hang, not load (importing JAX alone can take a minute)
    )
    assert proc.returncode == rc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- demo


def test_demo_renders_every_figure_from_an_existing_run(run_dir, tmp_path, capsys):
    from pairviz_jax.plotting import demo

    out = tmp_path / "demo"
    argv = ["demo", "--workdir", run_dir, "--out", out, "--gallery-size", 96]
    rc, stdout, err = _run(argv, capsys)
    assert rc == 0, err
    assert "train.py" not in err  # a finished run: no training
    assert sorted(os.path.basename(p) for p in stdout.split()) == sorted(demo.FIGURES)
    for name in demo.FIGURES:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 100


def _fake_python(tmp_path, status=0):
    """A 'python' that records its arguments (train.py's command line) and exits."""
    log = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {status}\n')
    fake.chmod(0o755)
    return str(fake), log


def test_demo_trains_with_train_py_when_there_is_no_checkpoint(tmp_path):
    from pairviz_jax.plotting import demo

    fake, log = _fake_python(tmp_path, 3)
    config = os.path.join(ROOT, "configs", "demo.py")
    with pytest.raises(plotting.InputError, match="exit status 3"):
        demo.ensure_trained(str(tmp_path / "run"), config, python=fake)
    argv = log.read_text().split()
    assert argv == [
        os.path.join(ROOT, "train.py"),
        "--config",
        config,
        "--workdir",
        str(tmp_path / "run"),
    ]
    with pytest.raises(plotting.InputError, match="no such file"):
        demo.ensure_trained(str(tmp_path / "run"), str(tmp_path / "nope.py"))


@pytest.mark.parametrize(
    "steps, total, final, why",
    [
        ((1, 2), 5, False, "stopped at step 2 of 5"),  # killed after step 2's checkpoint
        ((1, 2, 3), 3, False, "final evaluation missing"),  # killed in the final evaluation
    ],
)
def test_demo_resumes_an_unfinished_run_instead_of_drawing_it(tmp_path, steps, total, final, why):
    """The interrupted demo: a checkpoint exists, but the run is not finished."""
    from pairviz_jax.plotting import demo

    run = make_run(tmp_path / "run", steps, total=total, final=final)
    assert why in runs.run_status(run).describe() and not runs.run_status(run).finished
    fake, log = _fake_python(tmp_path, 0)  # "trains" without finishing the run
    config = os.path.join(ROOT, "configs", "demo.py")
    with pytest.raises(plotting.InputError, match=why):
        demo.ensure_trained(run, config, python=fake)
    assert log.read_text().split()[-1] == run  # train.py was run on the workdir (resumes)
    # A finished run is drawn as it is.
    done = make_run(tmp_path / "done", (1, 2, 3))
    assert demo.ensure_trained(done, config, python=fake) is False
    assert len(log.read_text().splitlines()) == 1


@pytest.fixture
def embedded(run_dir, tmp_path):
    """A tiny exported run and a config file that matches (or not) the run's config."""
    path = str(tmp_path / "embedded.npz")
    runs.export_run(run_dir, path, name="demo")

    def config_file(total=3):
        f = tmp_path / f"config_{total}.py"
        f.write_text(
            "from tests.test_visualize import _config\n\n\n"
            f"def get_config(arg=None):\n    return _config(total={total})\n"
        )
        return str(f)

    return path, config_file


def test_demo_draws_the_embedded_model_without_training(embedded, tmp_path, monkeypatch):
    from pairviz_jax.plotting import demo

    path, config_file = embedded
    monkeypatch.setattr(demo, "EMBEDDED", path)
    drawn, trained = [], []
    monkeypatch.setattr(demo, "render", lambda source, out, **kw: drawn.append(source) or [])
    monkeypatch.setattr(demo, "ensure_trained", lambda *a, **kw: trained.append(a))
    demo.run(None, str(tmp_path / "out"), config=config_file())
    assert drawn == [path] and trained == []
    # An embedded model trained with another config (configs/demo.py changed): train.
    demo.run(None, str(tmp_path / "out"), config=config_file(total=4))
    assert trained == [(demo.WORKDIR, config_file(total=4))] and drawn[-1] == demo.WORKDIR
    assert "total_steps 3 -> 4" in demo.embedded_run(config_file(total=4))[1]
    # --train, or no embedded file: train.
    demo.run(None, str(tmp_path / "out"), config=config_file(), train=True)
    monkeypatch.setattr(demo, "EMBEDDED", str(tmp_path / "missing.npz"))
    demo.run(None, str(tmp_path / "out"), config=config_file())
    assert len(trained) == 3
    # An exported run given as --workdir is drawn as it is.
    demo.run(path, str(tmp_path / "out"), config=config_file(total=4))
    assert drawn[-1] == path and len(trained) == 3


def test_exported_run_loads_like_the_run(run_dir, embedded):
    path, _ = embedded
    assert runs.checkpoint_steps(path) == [1, 2, 3]
    for step in (1, 3):
        a, b = runs.load_run(run_dir, step), runs.load_run(path, step)
        assert b.label == f"demo @ step {step}" and b.image_size == a.image_size
        tol = 0 if step == 3 else 1e-3  # earlier steps are stored in float16
        for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables), strict=True):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=tol, atol=tol)
    runs.export_run(run_dir, path, steps=[3])
    with pytest.raises(plotting.InputError, match="--step 2: no such checkpoint"):
        runs.load_run(path, 2)


def test_the_shipped_demo_model_is_current_and_draws_the_readme_figures(tmp_path):
    """configs/demo.py's run ships with the package; the README's figures are drawn from it."""
    from pairviz_jax.plotting import commands, demo

    path, why = demo.embedded_run()
    assert path is not None, why  # changed configs/demo.py? visualize.py demo --train --export
    assert os.path.getsize(path) < 4_000_000
    run = runs.read_exported(path)
    assert run.steps == [500, 1500, 3000, 3500] and run.metrics["eval/recall@1"] > 0.45
    m = runs.load_run(path)
    assert m.label == "demo @ step 3500" and m.image_size == (64, 64)
    a, b = (plotting.read_example(r, m) for r in demo.PAIR)
    fig = commands.pair(m, a, b, style=plotting.Style("modern"))
    png = plotting.save_figure(fig, str(tmp_path / "pair.png"))[0]
    with (
        Image.open(png) as got,
        Image.open(os.path.join(ROOT, "docs", "figures", "pair.png")) as want,
    ):
        assert got.size == want.size
        diff = np.abs(np.asarray(got, np.int16) - np.asarray(want, np.int16))
        assert diff.mean() < 0.5, diff.mean()  # docs/figures is this model's output


def test_query_label_comes_from_the_class_folder(folder_gallery, run_dir):
    from pairviz_jax.plotting import cli

    m = plotting.load_run(run_dir)
    gallery = plotting.open_gallery(folder_gallery, m)
    args = visualize.build_parser().parse_args(
        ["retrieve", "q.png", "--gallery", folder_gallery, "--workdir", run_dir]
    )
    assert cli.query_label(args, os.path.join(folder_gallery, "b", "1.png"), gallery) == "b"
    assert cli.query_label(args, "/elsewhere/q.png", gallery) is None
    args.label = "a"
    assert cli.query_label(args, "/elsewhere/q.png", gallery) == "a"


# ----------------------------------------------------------------------------- options


def test_compare_takes_its_own_model_options(
    run_dir, weight_files, folder_gallery, tmp_path, capsys
):
    query = os.path.join(folder_gallery, "a", "0.png")
    base = ["retrieve", query, "--gallery", folder_gallery, "--workdir", run_dir]
    base += ["--out", tmp_path / "r.png"]
    resnet = ["--compare", weight_files["resnet"], "--compare-image-size", SIZE]
    # The second model's options reach the second model, and errors name them.
    err = _error([*base, *resnet, "--compare-model-option", "num_groups=3"], capsys, "--compare ")
    assert "--compare-model-option num_groups=N" in err and "--weights" not in err
    rc, _, err = _run([*base, *resnet, "--compare-model-option", "num_groups=2"], capsys)
    assert rc == 0, err
    _error([*base, "--compare", run_dir, "--compare-num-heads", 2], capsys, "--compare-num-heads")
    _error([*base, "--compare-model-option", "x=1"], capsys, "needs --compare")
    _error([*base, "--compare", run_dir, "--compare-step", 7], capsys, "--compare-step 7")


def test_compare_step_picks_the_second_runs_checkpoint(
    run_dir, folder_gallery, tmp_path, capsys, captured
):
    query = os.path.join(folder_gallery, "a", "0.png")
    argv = ["retrieve", query, "--gallery", folder_gallery, "--workdir", run_dir, "--top", 2]
    argv += ["--compare", run_dir, "--compare-step", 1, "--out", tmp_path / "r.png"]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    fig = captured[0][2]
    name = os.path.basename(run_dir)
    assert [fig.axes[0].get_ylabel(), fig.axes[3].get_ylabel()] == [
        f"{name} @ step 3",
        f"{name} @ step 1",
    ]


def test_training_has_no_step_option(run_dir, capsys):
    argv = ["training", "demo:test:0", "--gallery", "demo:test", "--workdir", run_dir]
    with pytest.raises(SystemExit) as info:
        visualize.main([*argv, "--step", "10"])  # was accepted and ignored
    assert info.value.code == 2
    assert "unrecognized option --step; did you mean --steps?" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(visualize.COMMANDS))
def test_help_shows_every_option_with_its_default(command, capsys):
    with pytest.raises(SystemExit) as info:
        visualize.main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = visualize.build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            assert f"(default: {action.default})" in " ".join(text.split()), action.dest


def test_an_unfinished_run_is_drawn_only_with_a_note_and_its_step(tmp_path, capsys, captured):
    run = make_run(tmp_path / "half", (1, 2), total=5, final=False)
    argv = ["pair", "demo:test:0", "demo:test:24", "--workdir", run, "--out", tmp_path / "p.png"]
    rc, _, err = _run(argv, capsys)
    assert rc == 0
    assert err.strip() == f"note: {run}: stopped at step 2 of 5; the maps are step 2's"
    assert "half @ step 2" in captured[0][2]._suptitle.get_text()
