"""The explore page and the batch report without a browser: their data, files and commands.

What the pages draw is checked in a real browser in ``test_viewer_browser.py``; here the
data they embed is compared with the library (``explain.correspondence``,
``batch.BatchResults``) and the files with what a page may load (nothing from a network).
"""

import base64
import io
import json
import os
import re
from html import unescape

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import visualize
from pairviz_jax import batch, checkpoints, explain
from pairviz_jax.data import preprocess
from pairviz_jax.data.demo import render_example
from pairviz_jax.models import ViT, decode_variant
from pairviz_jax.plotting import Example, LoadedModel
from pairviz_jax.viewer import explore, report

SIZE = 32  # mu/4: an 8 x 8 token grid


def decode(obj):
    """The pages' float16 encoding, decoded independently of their JavaScript."""
    raw = np.frombuffer(base64.b64decode(obj["b64"]), "<f2").astype(np.float32)
    return raw.reshape(obj["shape"]) * obj.get("scale", 1.0)


def page_json(text):
    """The JSON of a page script ``PV_page(p,{...});``."""
    m = re.fullmatch(r"PV_page\((\d+),(.*)\);\s*", text, re.S)
    assert m, text[:80]
    return int(m[1]), json.loads(m[2])


def embedded_data(html):
    m = re.search(r'<script type="application/json" id="pv-data">(.*?)</script>', html, re.S)
    return json.loads(m[1])


@pytest.fixture(scope="session")
def loaded():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)))
    mean, std = preprocess.NORMALIZATION["demo"]
    return LoadedModel(model, variables, (SIZE, SIZE), mean, std, "mu/4 random")


def demo_example(i):
    return Example(render_example("test", i, image_size=SIZE)["image"], None, f"#{i}", f"t:{i}")


@pytest.fixture(scope="session")
def pair_data(loaded):
    a, b = demo_example(0), demo_example(3)
    return a, b, explore.explore_data(loaded, a, b, display=256)


@pytest.fixture(scope="session")
def topk_job(loaded, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("job") / "topk")
    loader = batch.ImageLoader(SIZE, "demo")
    keys = batch.image_keys("demo:test:40")
    batch.run_batch(
        loaded.model,
        loaded.variables,
        loader,
        out,
        images=keys,
        top_k=7,
        convention="transpose",
        shard_size=64,  # several shards: pages gather from more than one
        model_id="mu/4 random",
        progress=False,
    )
    return out


# ----------------------------------------------------------------------------- explore


def test_explore_data_is_the_correspondence(loaded, pair_data):
    a, b, data = pair_data
    x = loaded.prepare(np.stack([a.image, b.image]))
    f = explain.features(loaded.model, loaded.variables, x, head_fusion="mean")
    for level in ("patch", "token"):
        want = explain.correspondence(f.slice(0, 1), f.slice(1, 2), level=level, aligned=True)
        got = data["levels"][level]
        corr = decode(got["corr"])
        assert corr.shape == (64, 64)
        top = np.abs(want["corr"][0]).max()
        np.testing.assert_allclose(corr, want["corr"][0], atol=1e-3 * top)  # float16, scaled
        np.testing.assert_allclose(
            decode(got["map_a"]), np.ravel(want["map_a"][0]), atol=1e-3 * top * 64
        )
        np.testing.assert_allclose(decode(got["map_b"]).sum(), want["score"][0], atol=2e-3)
    assert data["score"] == pytest.approx(float(want["score"][0]), abs=1e-6)
    assert [im["grid"] for im in data["images"]] == [[8, 8], [8, 8]]
    assert data["model"] == "mu/4 random" and "R^T" in data["method"]
    for im, ex in zip(data["images"], (a, b), strict=True):
        header, payload = im["src"].split(",", 1)
        assert header in ("data:image/png;base64", "data:image/jpeg;base64")
        with Image.open(io.BytesIO(base64.b64decode(payload))) as pic:
            assert pic.size == (256, 256)
            small = np.asarray(pic.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), float)
        assert np.abs(small - ex.image).mean() < 12  # the same picture, scaled up
    lut = np.frombuffer(base64.b64decode(data["cmap"]), np.uint8).reshape(256, 3)
    assert tuple(lut[0]) == (0, 0, 4) and tuple(lut[-1]) == (252, 255, 164)  # inferno


def test_explore_bilrp_shows_the_second_order_c_first(loaded):
    a, b = demo_example(0), demo_example(3)
    data = explore.explore_data(loaded, a, b, display=64, method="bilrp")
    assert list(data["levels"]) == ["bilrp", "patch", "token"] and data["default_level"] == "bilrp"
    assert "BiLRP" in data["method"] and "BiLRP" in data["about_html"]
    x = loaded.prepare(np.stack([a.image, b.image]))
    ia, ib = (explain.Inputs(loaded.model, loaded.variables, x[i : i + 1]) for i in (0, 1))
    want = explain.correspondence(ia, ib, aligned=True, method="bilrp")
    got = data["levels"]["bilrp"]
    top = np.abs(want["corr"][0]).max()
    np.testing.assert_allclose(decode(got["corr"]), want["corr"][0], atol=1e-3 * top)
    # its row sums plus the rest: the conservative map of A against B
    cons = explain.paired_maps(
        loaded.model, loaded.variables, x[:1], x[1:], method="conservative", upsampled=False
    )
    rows = decode(got["corr"]).sum(-1) + decode(got["rest_a"])
    np.testing.assert_allclose(rows, np.ravel(cons["map_a"][0]), atol=1e-3 * top * 64)
    with pytest.raises(ValueError, match="--method lrp: is not a method"):
        explore.explore_data(loaded, a, b, display=64, method="lrp")


def test_explore_page_is_self_contained(pair_data, tmp_path):
    path = explore.write_explore(str(tmp_path / "sub" / "pair.html"), pair_data[2])
    html = open(path, encoding="utf-8").read()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)[1]
    assert unescape(csp) == explore.CSP and "default-src 'none'" in explore.CSP
    assert not re.search(r"https?://", html)  # no URL at all, not even in comments
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=", html)
    assert html.count("<script") == html.count("</script>") == 3  # data, common.js, explore.js
    assert embedded_data(html) == json.loads(json.dumps(pair_data[2]))
    assert len(html) < 300_000, len(html)


def test_explore_authors_convention_carries_the_rest(loaded, pair_data):
    a, b, _ = pair_data
    data = explore.explore_data(loaded, a, b, convention="authors", display=64)
    lv = data["levels"]["patch"]
    corr, rest_a = decode(lv["corr"]), decode(lv["rest_a"])
    map_a = decode(lv["map_a"])
    np.testing.assert_allclose(corr.sum(1) + rest_a, map_a, atol=2e-3 * np.abs(map_a).max())
    assert np.abs(rest_a).max() > 1e-4
    assert "authors" in data["method"]


def _run(argv, capsys):
    rc = visualize.main([str(x) for x in argv])
    out, err = capsys.readouterr()
    return rc, out.strip(), err.strip()


def _random_variables(model, size, seed):
    """Random variables of ``model``'s shapes for a weight file (an init compiles op by op)."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: rng.standard_normal(s.shape).astype(np.float32) * 0.3,
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    vit = ViT(**decode_variant("mu/4"), proj_dim=8)
    checkpoints.save(d / "vit.npz", _random_variables(vit, SIZE, 3), vit)
    tok = ViT(**decode_variant("mu/4"), class_token=True, pool_type="tok")
    checkpoints.save(d / "tok.npz", _random_variables(tok, 16, 3), tok)
    for i in (0, 5):
        big = render_example("test", i, image_size=96)["image"]
        Image.fromarray(big).save(d / f"{i}.png")
    (d / "broken.png").write_bytes(b"not a png")
    return d


def test_explore_command_from_weights_and_image_files(files, tmp_path, capsys):
    out = tmp_path / "pair.html"
    argv = ["explore", files / "0.png", files / "5.png", "--weights", files / "vit.npz"]
    rc, printed, err = _run([*argv, "--out", out, "--normalization", "demo"], capsys)
    assert rc == 0, err
    assert printed == str(out)
    data = embedded_data(out.read_text(encoding="utf-8"))
    assert [im["name"] for im in data["images"]] == ["0", "5"]
    assert data["model"] == "vit"
    # Drawn from the 96-px originals, not the 32-px model input scaled up: sharper.
    src = data["images"][0]["src"].split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(src))) as pic:
        shown = np.asarray(pic.convert("RGB"), float)
    original = np.asarray(Image.open(files / "0.png").resize((448, 448), Image.LANCZOS), float)
    assert np.abs(shown - original).mean() < 3


def test_explore_a_cnn_has_one_level_c_equal_p():
    from tests.test_explain import _TinyCNN

    model = _TinyCNN()  # no attention: eq. 4 over feature-map cells
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 3)))
    loaded = LoadedModel(model, variables, (8, 8), None, None, "cnn")
    rng = np.random.default_rng(0)
    a, b = (Example(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), None, n, n) for n in "ab")
    data = explore.explore_data(loaded, a, b, display=64)
    assert list(data["levels"]) == ["patch"] and "no attention" in data["method"]
    assert data["levels"]["patch"]["label"] == "feature-map cells (C = P)"
    corr = decode(data["levels"]["patch"]["corr"])
    assert corr.shape == (16, 16)
    assert corr.sum() == pytest.approx(data["score"], abs=float(2e-3 * np.abs(corr).sum()))


def test_explore_command_from_a_run(tmp_path, capsys):
    from tests.test_visualize import make_run

    run = make_run(tmp_path / "run", steps=(2,))
    out = tmp_path / "run.html"
    argv = ["explore", "demo:test:0", "demo:test:1", "--workdir", run, "--out", out]
    rc, printed, err = _run([*argv, "--convention", "authors", "--display", "128"], capsys)
    assert rc == 0, err
    data = embedded_data(out.read_text(encoding="utf-8"))
    assert data["model"] == "run @ step 2" and data["convention"] == "authors"
    assert [im["size"] for im in data["images"]] == [[128, 128], [128, 128]]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--display", "10"], "--display 10: expected 64 to 4096"),
        (["--out", "x.png"], "expected an .html file"),
        (["--cmap", "nope"], "--cmap nope: not a matplotlib colormap"),
        (["--start-layer", "3"], "--start-layer 3: the model has 1 blocks"),
    ],
)
def test_explore_option_errors(files, capsys, extra, needle):
    argv = ["explore", files / "0.png", files / "5.png", "--weights", files / "vit.npz", *extra]
    rc, _, err = _run(argv, capsys)
    assert rc == 1 and needle in err and len(err.splitlines()) == 1, err


def test_explore_input_errors(files, tmp_path, capsys):
    out = ["--out", tmp_path / "x.html"]
    rc, _, err = _run(["explore", files / "0.png", files / "broken.png", "--weights",
                       files / "vit.npz", *out], capsys)  # fmt: skip
    assert rc == 1 and "broken.png" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.html").exists()
    # A class-token model has an exact split too (pairviz_jax.explain.decompose).
    rc, _, err = _run(["explore", files / "0.png", files / "5.png", "--weights",
                       files / "tok.npz", *out], capsys)  # fmt: skip
    assert rc == 0 and (tmp_path / "x.html").exists(), err


# ----------------------------------------------------------------------------- report


def _pages(dest):
    pages = {}
    for root, _, names in os.walk(os.path.join(dest, "data")):
        for name in names:
            if name != "queries.js":
                p, body = page_json(open(os.path.join(root, name), encoding="utf-8").read())
                pages[p] = body
    return [pages[p] for p in range(len(pages))]


def test_report_pages_hold_every_pair_with_its_maps(topk_job, tmp_path):
    dest = str(tmp_path / "rep")
    index = report.write_report(topk_job, dest, per_page=16)
    assert index == os.path.join(dest, "index.html")
    res = batch.BatchResults(topk_job)
    assert len(res.shards) == 5  # 280 pairs in shards of 64
    pages = _pages(dest)
    meta = embedded_data(open(index, encoding="utf-8").read())
    assert meta["pages"] == len(pages) and meta["pairs"] == 280 == res.num_pairs
    assert meta["grid"] == [8, 8] and meta["mode"] == "topk" and meta["convention"] == "transpose"
    seen = []
    for body in pages:
        assert len(body["rows"]) <= 16
        maps = decode(body["maps"])
        assert maps.dtype == np.float32 and maps.shape == (len(body["rows"]), 2, 64)
        for k, (rec, a, b, score, rank) in enumerate(body["rows"]):
            got = res.get(rec)
            assert (got["a"], got["b"]) == (body["names"][str(a)], body["names"][str(b)])
            assert got["a"] == res.images[a] and got["b"] == res.images[b]
            assert np.array_equal(maps[k, 0], got["maps_a"].ravel().astype(np.float32))
            assert np.array_equal(maps[k, 1], got["maps_b"].ravel().astype(np.float32))
            assert score == pytest.approx(got["score"], abs=1e-5)
            seen.append((a, rank, score, rec))
    assert sorted(r for *_, r in seen) == list(range(280))  # every pair once
    # Grouped by query, best first, ranks 1..7; whole queries per page (7 + 7 <= 16).
    for i in range(0, 280, 7):
        group = seen[i : i + 7]
        assert len({a for a, *_ in group}) == 1
        assert [r for _, r, _, _ in group] == list(range(1, 8))
        assert all(x[2] >= y[2] for x, y in zip(group, group[1:], strict=False))
    assert [len(body["rows"]) for body in pages] == [14] * 20
    for a in {a for a, *_ in seen} | {int(b) for body in pages for _, _, b, _, _ in body["rows"]}:
        with Image.open(os.path.join(dest, report.thumb_path(a))) as im:
            assert im.size == (SIZE, SIZE)
    queries = json.loads(
        re.fullmatch(r"PV_queries\((.*)\);\s*", open(f"{dest}/data/queries.js").read(), re.S)[1]
    )
    assert len(queries) == 40 and queries[0] == [res.images[seen[0][0]], 0]


def test_report_by_score_and_best_per_query(topk_job, tmp_path):
    res = batch.BatchResults(topk_job)
    report.write_report(topk_job, str(tmp_path / "s"), per_page=50, order="score", per_query=2)
    rows = [r for body in _pages(str(tmp_path / "s")) for r in body["rows"]]
    assert len(rows) == 80  # the best 2 of each of the 40 queries
    scores = [r[3] for r in rows]
    assert scores == sorted(scores, reverse=True) and [r[4] for r in rows] == list(range(1, 81))
    all_scores = np.concatenate([np.asarray(sh["score"]) for sh in res.shards])
    pairs = res.pairs(np.concatenate([np.asarray(sh["record"]) for sh in res.shards]))
    for a in range(40):
        best2 = np.sort(all_scores[pairs[:, 0] == a])[-2:]
        mine = sorted(r[3] for r in rows if r[1] == a)
        np.testing.assert_allclose(mine, best2, atol=1e-5)


def test_report_of_a_pairs_file_job(loaded, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "a,b\n" + "".join(f"demo:test:{i},demo:test:{(i * 7) % 13}\n" for i in range(30))
    )
    out = str(tmp_path / "job")
    batch.run_batch(
        loaded.model, loaded.variables, batch.ImageLoader(SIZE, "demo"), out,
        pairs_file=str(pairs), progress=False,
    )  # fmt: skip
    index = report.write_report(out, per_page=8)
    assert index == os.path.join(out, "report", "index.html")
    pages = _pages(os.path.join(out, "report"))
    rows = [r for body in pages for r in body["rows"]]
    assert sorted(r[0] for r in rows) == list(range(30))
    assert all(len(body["rows"]) <= 8 for body in pages)


def test_report_survives_images_that_are_gone(loaded, tmp_path, capsys):
    for i in range(4):
        Image.fromarray(render_example("test", i, image_size=SIZE)["image"]).save(
            tmp_path / f"{i}.png"
        )
    (tmp_path / "pairs.tsv").write_text("0.png\t1.png\n2.png\t3.png\n1.png\t2.png\n")
    out = str(tmp_path / "job")
    batch.run_batch(
        loaded.model, loaded.variables, batch.ImageLoader(SIZE, "demo", root=str(tmp_path)),
        out, pairs_file=str(tmp_path / "pairs.tsv"), progress=False,
    )  # fmt: skip
    os.remove(tmp_path / "2.png")
    rc, printed, err = _run(["report", out], capsys)
    assert rc == 0, err
    assert "1 images could not be read" in err and "2.png" in err
    dest = os.path.join(out, "report")
    info = json.load(open(os.path.join(dest, "report.json")))
    assert info["missing_images"] == 1 and info["pairs"] == 3
    index = batch.BatchResults(out).images.index("2.png")
    with Image.open(os.path.join(dest, report.thumb_path(index))) as im:
        assert np.asarray(im).std() < 1  # a grey stand-in
    assert "job" not in embedded_data(open(printed).read())


@pytest.mark.parametrize("seed", range(5))
def test_plan_pages_keeps_queries_whole_where_they_fit(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, size=rng.integers(1, 60))
    per_page = int(rng.integers(5, 40))
    starts = report.plan_pages(sizes, per_page)
    total = int(sizes.sum())
    ends = np.append(starts[1:], total)
    assert starts[0] == 0 and np.all(np.diff(starts) > 0) and ends[-1] == total
    assert np.all(ends - starts <= per_page)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for s in starts[1:]:
        if s not in bounds:  # a split inside a group: only for a group that cannot fit
            g = np.searchsorted(bounds, s) - 1
            assert sizes[g] > per_page
    # Greedy: a page's first group could not have gone onto the page before.
    for p in range(1, len(starts)):
        if starts[p] in bounds:
            g = np.searchsorted(bounds, starts[p])
            prev_used = starts[p] - starts[p - 1]
            assert prev_used + sizes[g] > per_page


def test_report_command_and_errors(topk_job, tmp_path, capsys):
    dest = tmp_path / "r"
    rc, printed, err = _run(["report", topk_job, "--dest", dest, "--per-page", "20"], capsys)
    assert rc == 0, err
    assert printed == str(dest / "index.html")
    rc, _, _ = _run(["report", topk_job, "--dest", dest, "--order", "score"], capsys)  # replaced
    assert rc == 0 and embedded_data((dest / "index.html").read_text())["order"] == "score"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    rc, _, err = _run(["report", topk_job, "--dest", other], capsys)
    assert rc == 1 and "not a pairviz report" in err and (other / "notes.txt").exists()
    rc, _, err = _run(["report", tmp_path / "nothing"], capsys)
    assert rc == 1 and "no such folder" in err and len(err.splitlines()) == 1
    rc, _, err = _run(["report", other], capsys)
    assert rc == 1 and "no batch job" in err and len(err.splitlines()) == 1
    rc, _, err = _run(["report", topk_job, "--per-page", "0"], capsys)
    assert rc == 1 and "--per-page 0: expected 1 to 10000" in err
    unfinished = tmp_path / "unfinished"
    os.makedirs(unfinished / "shards")
    for name in ("job.json", "images.txt", "pairs.npy"):
        with open(os.path.join(topk_job, name), "rb") as src:
            (unfinished / name).write_bytes(src.read())
    rc, _, err = _run(["report", unfinished], capsys)
    assert rc == 1 and "not finished" in err and "partial" in err
    rc, _, err = _run(["report", unfinished, "--partial"], capsys)
    assert rc == 1 and "no written pairs" in err


# ----------------------------------------------------------------------------- report --method

F16 = 2.0**-11  # float16 keeps 11 significant bits: |x - f16(x)| <= F16 |x| (normal range)


def _c_of(body):
    """A page's C [n, N, N] and rests [n, 2, N], decoded with their per-pair scales
    (independently of the page's JavaScript), and the scales."""

    def rows(obj):
        raw = np.frombuffer(base64.b64decode(obj["b64"]), "<f2").astype(np.float32)
        scales = np.asarray(obj["scales"], np.float32)
        raw = raw.reshape(obj["shape"])
        return raw * scales.reshape(-1, *[1] * (raw.ndim - 1)), scales

    (corr, cs), (rests, rs) = rows(body["corr"]), rows(body["rests"])
    return corr, rests, cs, rs


def _job_inputs(loaded, res, pairs):
    """The job's model inputs of the images of ``pairs`` [n, 2], read as the job read them."""
    loader = batch.ImageLoader(SIZE, "demo")
    xa = np.stack([loader(res.images[a]) for a, _ in pairs])
    xb = np.stack([loader(res.images[b]) for _, b in pairs])
    return xa, xb


def _assert_c(corr, cs, want):
    """Page C == the library's C for the same pairs, to float16's rounding of each pair's
    largest entry (the page's encoding) plus float32's over N terms."""
    tol = (F16 + 64 * 2.0**-24) * cs.reshape(-1, 1, 1)
    assert np.all(np.abs(corr - np.asarray(want["corr"])) <= tol)


def test_report_method_paper_embeds_the_jobs_rollout_c(loaded, topk_job, tmp_path):
    dest = str(tmp_path / "rep")
    index = report.write_report(topk_job, dest, per_page=16, matches=20)
    meta = embedded_data(open(index, encoding="utf-8").read())
    assert meta["method"] == "paper" and meta["c_pairs"] == 20 and not meta["maps_of_c"]
    assert "rollout C" in meta["c_label"] and "WACV 2022" in meta["c_label"]
    assert "transpose" in meta["c_label"] and meta["pairs"] == 280  # every pair, 20 with C
    pages = _pages(dest)
    assert [len(_c_of(b)[0]) if "corr" in b else 0 for b in pages[:3]] == [14, 6, 0]
    res = batch.BatchResults(topk_job)
    for body in pages[:2]:
        corr, rests, cs, rs = _c_of(body)
        n = len(corr)
        pairs = np.asarray([r[1:3] for r in body["rows"][:n]])
        xa, xb = _job_inputs(loaded, res, pairs)
        fa, fb = (explain.features(loaded.model, loaded.variables, x) for x in (xa, xb))
        want = explain.correspondence(fa, fb, aligned=True, convention="transpose")
        _assert_c(corr, cs, want)
        # Its row sums plus the rest are the job's map (float16), its total the cosine.
        maps = decode(body["maps"])[:n]
        top = cs.reshape(-1, 1) * 64 * F16 + rs.reshape(-1, 1) * F16
        assert np.all(np.abs(corr.sum(-1) + rests[:, 0] - maps[:, 0]) <= top + F16 * 0.1)
        total = corr.sum((1, 2)) + rests.sum((1, 2)) + np.asarray(body["rest"])
        scores = np.asarray([r[3] for r in body["rows"][:n]])
        assert np.all(np.abs(total - scores) <= 64 * 64 * F16 * cs + 128 * F16 * rs + 1e-5)


def test_report_method_bilrp_embeds_the_second_order_c(loaded, topk_job, tmp_path):
    dest = str(tmp_path / "bilrp")
    index = report.write_report(topk_job, dest, per_page=16, matches=10, method="bilrp",
                                loaded=loaded)  # fmt: skip
    meta = embedded_data(open(index, encoding="utf-8").read())
    assert meta["method"] == "bilrp" and meta["job_method"] == "paper" and meta["maps_of_c"]
    assert "BiLRP" in meta["c_label"] and "Eberle et al., TPAMI 2020" in meta["c_label"]
    assert meta["pairs"] == meta["c_pairs"] == 10  # the job's maps are not bilrp's: C's only
    pages = _pages(dest)
    rows = [r for b in pages for r in b["rows"]]
    assert len(rows) == 10 and all("corr" in b for b in pages)
    res = batch.BatchResults(topk_job)
    for body in pages:
        corr, rests, cs, rs = _c_of(body)
        pairs = np.asarray([r[1:3] for r in body["rows"]])
        xa, xb = _job_inputs(loaded, res, pairs)
        ia, ib = (explain.Inputs(loaded.model, loaded.variables, x) for x in (xa, xb))
        want = explain.correspondence(ia, ib, aligned=True, method="bilrp")
        _assert_c(corr, cs, want)
        # The maps drawn are C's marginals (the conservative maps), not the job's.
        maps = decode(body["maps"])
        np.testing.assert_allclose(maps[:, 0], np.asarray(want["map_a"]).reshape(-1, 64),
                                   rtol=F16, atol=2.0**-24)  # fmt: skip
        np.testing.assert_allclose(maps[:, 1], np.asarray(want["map_b"]).reshape(-1, 64),
                                   rtol=F16, atol=2.0**-24)  # fmt: skip
        # C + the rests (biases, prefix tokens) sum to the pair's cosine (bilrp: exact).
        total = corr.sum((1, 2)) + rests.sum((1, 2)) + np.asarray(body["rest"])
        scores = np.asarray([r[3] for r in body["rows"]])
        assert np.all(np.abs(total - scores) <= 64 * 64 * F16 * cs + 128 * F16 * rs + 1e-5)
        np.testing.assert_allclose(body["score"], scores, atol=1e-5)


def test_with_c_is_the_registrys_folding_methods():
    from pairviz_jax.explain.methods import METHODS
    from pairviz_jax.viewer import _corr

    assert set(_corr.WITH_C) == {"paper"} | {k for k, m in METHODS.items() if m.fold}
    assert set(_corr.SOURCES) == set(_corr.WITH_C)


def test_report_method_errors(loaded, topk_job, files, tmp_path, capsys, monkeypatch):
    from pairviz_jax.viewer import cli as viewer_cli
    from tests.test_explain import _TinyCNN

    dest = ["--dest", tmp_path / "r"]

    def usage(argv):
        with pytest.raises(SystemExit) as e:
            visualize.main([str(x) for x in ["report", topk_job, *dest, *argv]])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert not (tmp_path / "r").exists()  # before any work
        return err

    assert "chefer: gives per-patch maps only" in usage(["--method", "chefer"])
    # Found after parsing (no model for bilrp): named by the program that ran.
    assert usage(["--method", "bilrp"]).startswith("visualize.py report: error: --method bilrp")
    with pytest.raises(SystemExit):
        visualize.main(
            [str(x) for x in ["report", topk_job, *dest, "--method", "bilrp"]], "pairviz"
        )
    assert capsys.readouterr().err.startswith("pairviz report: error: --method bilrp")
    assert "nope: is not a method" in usage(["--method", "nope"])
    assert "needs the job's model" in usage(["--method", "bilrp"])
    cnn = _TinyCNN()
    cnn_vars = cnn.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 3)))
    fake = LoadedModel(cnn, cnn_vars, (8, 8), None, None, "cnn")
    monkeypatch.setattr(viewer_cli, "load_model", lambda args: fake)
    err = usage(["--method", "bilrp", "--weights", files / "vit.npz"])
    assert "needs a ViT" in err and "_TinyCNN" in err
    monkeypatch.undo()
    # Another model than the job's: refused (input), before any work.
    rc, _, err = _run(["report", topk_job, *dest, "--method", "bilrp", "--weights",
                       files / "vit.npz", "--normalization", "demo"], capsys)  # fmt: skip
    assert rc == 1 and "not the one the job ran with" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
    # The default is the one default method, and the page says which C it shows.
    rc, printed, err = _run(["report", topk_job, *dest, "--matches", "3"], capsys)
    assert rc == 0, err
    meta = embedded_data(open(printed, encoding="utf-8").read())
    from pairviz_jax import argcheck

    assert meta["method"] == argcheck.DEFAULT_METHOD and meta["c_pairs"] == 3
    # --method bilrp with the job's model, from its weight file.
    checkpoints.save(tmp_path / "job_model.npz", loaded.variables, loaded.model)
    argv = ["--method", "bilrp", "--weights", tmp_path / "job_model.npz", "--normalization", "demo"]
    rc, printed, err = _run(["report", topk_job, *dest, *argv, "--matches", "4"], capsys)
    assert rc == 0, err
    meta = embedded_data(open(printed, encoding="utf-8").read())
    assert meta["method"] == "bilrp" and meta["pairs"] == meta["c_pairs"] == 4
    rc, _, err = _run(["report", topk_job, *dest, *argv, "--matches", "0"], capsys)
    assert rc == 1 and "--matches 0: the job's maps are paper's" in err


def test_explore_and_report_take_the_one_default_when_it_has_a_c(monkeypatch):
    from pairviz_jax import argcheck
    from pairviz_jax.viewer import cli as viewer_cli

    parse = visualize.build_parser().parse_args
    for argv in (["report", "job"], ["explore", "a.png", "b.png", "--workdir", "run"]):
        assert viewer_cli.resolve_method(parse(argv)) == argcheck.DEFAULT_METHOD
        monkeypatch.setattr(viewer_cli, "DEFAULT_METHOD", "bilrp")  # read when it runs
        assert viewer_cli.resolve_method(parse(argv)) == "bilrp"
        monkeypatch.setattr(viewer_cli, "DEFAULT_METHOD", "chefer")  # no C: the paper's
        assert viewer_cli.resolve_method(parse(argv)) == "paper"
        assert viewer_cli.resolve_method(parse([*argv, "--method", "bilrp"])) == "bilrp"
        monkeypatch.undo()


def test_report_of_a_bilrp_job_keeps_its_maps_and_every_pair(loaded, tmp_path):
    out = str(tmp_path / "job")
    batch.run_batch(
        loaded.model, loaded.variables, batch.ImageLoader(SIZE, "demo"), out,
        images=batch.image_keys("demo:test:8"), top_k=2, method="bilrp", progress=False,
    )  # fmt: skip
    index = report.write_report(out, str(tmp_path / "r"), method="bilrp", loaded=loaded,
                                matches=10, per_page=6)  # fmt: skip
    meta = embedded_data(open(index, encoding="utf-8").read())
    assert meta["pairs"] == 16 and meta["c_pairs"] == 10 and not meta["maps_of_c"]
    res = batch.BatchResults(out)
    with_c = 0
    for body in _pages(str(tmp_path / "r")):
        maps = decode(body["maps"])
        for k, row in enumerate(body["rows"]):  # the job's own (bilrp) maps, every pair
            assert np.array_equal(maps[k, 0], res.get(row[0])["maps_a"].ravel().astype(np.float32))
        if "corr" in body:  # C's row sums + rest: those maps (float16 on both sides)
            corr, rests, cs, rs = _c_of(body)
            n = len(corr)
            bound = 64 * F16 * cs.reshape(-1, 1) + F16 * (rs.reshape(-1, 1) + np.abs(maps[:n, 0]))
            assert np.all(np.abs(corr.sum(-1) + rests[:, 0] - maps[:n, 0]) <= bound)
            with_c += n
    assert with_c == 10
