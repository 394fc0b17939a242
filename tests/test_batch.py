"""Batch jobs: output equals the paired maps, pairs index, top-k, resume after kills, two hosts."""

import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pairviz_jax import batch, explain
from pairviz_jax.models import ViT, decode_variant

SIZE = 16
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The job every process of the kill and multi-process tests runs (argv: out_dir, sleep/shard,
# coordinator or "-", process id, process count).
CHILD = textwrap.dedent(
    """
    import os, sys, time
    out, sleep, coordinator, pid, nproc = sys.argv[1:6]
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    if coordinator != "-":
        from pairviz_jax.train import sharding
        sharding.initialize_distributed(coordinator, int(nproc), int(pid))
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    from job import run
    run(out, on_shard=lambda s: time.sleep(float(sleep)))
    """
)

JOB = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from pairviz_jax import batch
    from pairviz_jax.models import ViT, decode_variant

    def run(out, **kw):
        model = ViT(**decode_variant("mu/4"), proj_dim=8)
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
        loader = batch.ImageLoader(16, "demo", dataset="demo", split="test")
        return batch.run_batch(
            model, variables, loader, out, pairs_file=PAIRS, shard_size=SHARD, progress=False,
            embed_batch=8, strategy="gather", **kw,
        )
    """
)


@pytest.fixture(scope="module")
def tiny():
    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)))
    loader = batch.ImageLoader(SIZE, "demo", dataset="demo", split="test")
    return model, variables, loader


def _pairs_csv(path, n, images, seed=0, header=True, sep=","):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        if header:
            f.write(f"image_a{sep}image_b\n")
        for a, b in rng.integers(0, images, (n, 2)):
            f.write(f"{a}{sep}{b}\n")
    return str(path)


def _all_records(out):
    """record -> (a key, b key, maps_a, maps_b, score) of a finished job."""
    res = batch.BatchResults(out)
    rows = {}
    for shard in res:
        for j, r in enumerate(np.asarray(shard["record"])):
            assert int(r) not in rows, f"record {r} written twice"
            a, b = res.pairs([r])[0]
            rows[int(r)] = (
                res.images[a],
                res.images[b],
                np.asarray(shard["maps_a"][j]),
                np.asarray(shard["maps_b"][j]),
                float(shard["score"][j]),
            )
    return rows


def _assert_same(rows_a, rows_b, atol=0.0):
    assert rows_a.keys() == rows_b.keys()
    for r in rows_a:
        a, b = rows_a[r], rows_b[r]
        assert a[:2] == b[:2], r
        np.testing.assert_allclose(a[2], b[2], atol=atol, rtol=0, err_msg=f"record {r}")
        np.testing.assert_allclose(a[3], b[3], atol=atol, rtol=0, err_msg=f"record {r}")
        np.testing.assert_allclose(a[4], b[4], atol=atol, rtol=0, err_msg=f"record {r}")


# --------------------------------------------------------------------------- pieces


def test_all_pairs_index_is_row_major_i_less_than_j():
    for n in (2, 3, 7):
        want = np.asarray(list(itertools.combinations(range(n), 2)))
        got = batch.AllPairs(n).take(0, n * (n - 1) // 2)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(batch.AllPairs(n).take(1, 3), want[1:3])
    want = np.asarray(list(itertools.combinations(range(50), 2)))
    records = np.random.default_rng(0).integers(0, len(want), 200)
    np.testing.assert_array_equal(batch.AllPairs(50).of(records), want[records])
    with pytest.raises(IndexError):
        batch.AllPairs(50).of([len(want)])
    big = batch.AllPairs(100_000)  # float rounding near the end of a huge triangle
    total = len(big)
    np.testing.assert_array_equal(
        big.take(total - 3, total), [[99997, 99998], [99997, 99999], [99998, 99999]]
    )
    np.testing.assert_array_equal(big.take(99_998, 100_000), [[0, 99_999], [1, 2]])


def test_read_pairs_file_formats(tmp_path):
    p = tmp_path / "p.tsv"
    p.write_text("# comment\nx.png\ty.png\textra\n\nz.png\tx.png\n")
    keys = batch.read_pairs_file(str(p), str(tmp_path / "p.npy"))
    assert keys == ["x.png", "y.png", "z.png"]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), [[0, 1], [2, 0]])
    q = tmp_path / "q.csv"
    q.write_text("a,b\n3,4\n4,3\n")
    assert batch.read_pairs_file(str(q), str(tmp_path / "q.npy")) == ["3", "4"]
    bad = tmp_path / "bad.csv"
    bad.write_text("3,4\n5\n")
    with pytest.raises(ValueError, match="row 2"):
        batch.read_pairs_file(str(bad), str(tmp_path / "bad.npy"))


def test_top_k_pairs_match_brute_force_with_exclusions():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(37, 5)).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    ok = np.ones(37, bool)
    ok[[3, 10]] = False
    ids = np.arange(37)
    got = batch.top_k_pairs(u, u, 4, q_ids=ids, g_ids=ids, g_ok=ok, block=8)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    s[:, ~ok] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-s, axis=1, kind="stable")[:, :4])


def test_progress_line_shows_rate_and_eta():
    out = io.StringIO()
    bar = batch.Progress(1000, initial=100, stream=out, every=0.0)
    time.sleep(0.01)
    bar.update(300)
    line = out.getvalue()
    assert "400/1,000 pairs" in line and "pairs/s" in line and "ETA 00:00:" in line
    assert bar.rate > 0


# --------------------------------------------------------------------------- jobs


def test_job_matches_paired_maps_and_skips_unreadable_images(tiny, tmp_path):
    model, variables, _ = tiny
    from pairviz_jax.data import demo

    src = demo.DemoSource("test", image_size=SIZE)
    names = []
    for i in range(5):
        Image.fromarray(src[i]["image"]).save(tmp_path / f"im{i}.png")
        names.append(f"im{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    names += ["broken.png", "missing.png"]
    rng = np.random.default_rng(1)
    pairs = [(names[a], names[b]) for a, b in rng.integers(0, len(names), (30, 2))]
    pairs += [("im0.png", "broken.png"), ("missing.png", "im1.png"), ("im2.png", "im3.png")]
    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    loader = batch.ImageLoader(SIZE, "demo", root=str(tmp_path))
    out = str(tmp_path / "out")
    summary = batch.run_batch(
        model,
        variables,
        loader,
        out,
        pairs_file=str(tmp_path / "pairs.tsv"),
        shard_size=8,
        strategy="gather",
        png_first=2,
        progress=False,
    )
    bad = {"broken.png", "missing.png"}
    want_skipped = sum(a in bad or b in bad for a, b in pairs)
    assert summary["skipped"] == want_skipped and summary["written"] == len(pairs) - want_skipped
    assert summary["unreadable"] == 2
    unreadable = (tmp_path / "out" / "unreadable.txt").read_text()
    assert "broken.png" in unreadable and "missing.png" in unreadable
    assert len(os.listdir(tmp_path / "out" / "png")) >= 1

    rows = _all_records(out)
    res = batch.BatchResults(out)
    for r, (a, b) in enumerate(pairs):
        if a in bad or b in bad:
            assert r not in rows and res.get(r) is None
            continue
        got = rows[r]
        assert got[:2] == (a, b)
        ref = explain.paired_maps(
            model, variables, jnp.asarray(loader(a))[None], jnp.asarray(loader(b))[None]
        )
        np.testing.assert_allclose(got[2], ref["map_a"][0], atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(got[3], ref["map_b"][0], atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(got[4], ref["score"][0], atol=1e-5)
    # Memory-mappable: the arrays are np.memmap views of the shard files.
    assert isinstance(res.shards[0]["maps_a"], np.memmap)
    assert res.shards[0]["maps_a"].dtype == np.float16


@pytest.mark.parametrize("method", ["chefer", "conservative"])
def test_job_by_another_method_matches_its_paired_maps(tiny, tmp_path, method):
    """--method: each record is explain.paired_maps(method=...) of its pair; unreadable
    images are skipped as with the paper's fold; a resumed job with another method is
    refused."""
    model, variables, _ = tiny
    from pairviz_jax.data import demo

    src = demo.DemoSource("test", image_size=SIZE)
    names = []
    for i in range(4):
        Image.fromarray(src[i]["image"]).save(tmp_path / f"im{i}.png")
        names.append(f"im{i}.png")
    pairs = [("im0.png", "im1.png"), ("im2.png", "missing.png"), ("im3.png", "im0.png")]
    pairs += [("im1.png", "im2.png"), ("im1.png", "im3.png")]
    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    loader = batch.ImageLoader(SIZE, "demo", root=str(tmp_path))
    out = str(tmp_path / "out")
    kw = dict(pairs_file=str(tmp_path / "pairs.tsv"), shard_size=2, progress=False)
    summary = batch.run_batch(model, variables, loader, out, method=method, **kw)
    assert summary["skipped"] == 1 and summary["written"] == 4
    rows = _all_records(out)
    paper = explain.paired_maps(
        model, variables, jnp.asarray(loader("im0.png"))[None], jnp.asarray(loader("im1.png"))[None]
    )
    for r, (a, b) in enumerate(pairs):
        if "missing.png" in (a, b):
            assert r not in rows
            continue
        xa, xb = (jnp.asarray(loader(k))[None] for k in (a, b))
        ref = explain.paired_maps(model, variables, xa, xb, method=method)
        for got, want in ((rows[r][2], ref["map_a"][0]), (rows[r][3], ref["map_b"][0])):
            scale = float(np.abs(want).max())
            np.testing.assert_allclose(got, want, atol=2e-3 * scale, rtol=2e-3)
        np.testing.assert_allclose(rows[r][4], ref["score"][0], atol=1e-5)
    assert np.abs(rows[0][2] - np.asarray(paper["map_a"][0])).max() > 1e-4  # not the paper's
    with pytest.raises(ValueError, match="different job"):
        batch.run_batch(model, variables, loader, out, method="gradxinput", **kw)
    with pytest.raises(ValueError, match="unknown method"):
        batch.run_batch(model, variables, loader, str(tmp_path / "o2"), method="lrp", **kw)


def test_tile_strategy_equals_gather_and_transpose_maps_sum_to_score(tiny, tmp_path):
    model, variables, loader = tiny
    pairs = _pairs_csv(tmp_path / "p.csv", 200, 24)
    kw = dict(pairs_file=pairs, shard_size=64, progress=False, convention="transpose")
    batch.run_batch(model, variables, loader, str(tmp_path / "g"), strategy="gather", **kw)
    batch.run_batch(model, variables, loader, str(tmp_path / "t"), strategy="tile", **kw)
    g, t = _all_records(str(tmp_path / "g")), _all_records(str(tmp_path / "t"))
    _assert_same(g, t, atol=1e-3)
    for _, _, ma, mb, score in g.values():  # R^T @ gamma preserves the total (eq. 6)
        assert abs(ma.astype(np.float32).sum() - score) < 5e-3
        assert abs(mb.astype(np.float32).sum() - score) < 5e-3


def _unit_embeddings(model, variables, loader, keys):
    """Unit embeddings from a plain forward pass (independent of the job's fold)."""
    x = jnp.stack([jnp.asarray(loader(k)) for k in keys])
    emb = np.asarray(model.apply(variables, x)[0], np.float64)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.mark.parametrize("with_gallery", [False, True])
def test_top_k_job_equals_brute_force_top_k(tiny, tmp_path, with_gallery):
    """Each query's k records are its k most similar images, most similar first, scores
    the cosines: against a brute-force ranking of all cosines (``gallery=`` mode too)."""
    model, variables, loader = tiny
    queries = [str(i) for i in range(12)]
    gallery = [str(i) for i in range(6, 30)] if with_gallery else None
    k = 4
    s = batch.run_batch(
        model,
        variables,
        loader,
        str(tmp_path / "k"),
        images=queries,
        gallery=gallery,
        top_k=k,
        progress=False,
        shard_size=16,
    )
    assert s["pairs"] == len(queries) * k and s["written"] == len(queries) * k
    rows = _all_records(str(tmp_path / "k"))
    pool = gallery or queries
    uq = _unit_embeddings(model, variables, loader, queries)
    ug = _unit_embeddings(model, variables, loader, pool)
    cos = uq @ ug.T
    for qi, q in enumerate(queries):
        c = cos[qi].copy()
        c[[j for j, g in enumerate(pool) if g == q]] = -np.inf  # never the query itself
        want = np.argsort(-c, kind="stable")[:k]
        got = [rows[qi * k + j] for j in range(k)]
        assert [r[0] for r in got] == [q] * k
        assert [r[1] for r in got] == [pool[j] for j in want], q
        np.testing.assert_allclose([r[4] for r in got], c[want], atol=1e-5)


def test_all_pairs_job(tiny, tmp_path):
    model, variables, loader = tiny
    keys = [str(i) for i in range(12)]
    s = batch.run_batch(
        model,
        variables,
        loader,
        str(tmp_path / "all"),
        images=keys,
        all_pairs=True,
        progress=False,
        shard_size=10,
    )
    rows = _all_records(str(tmp_path / "all"))
    assert s["pairs"] == 66 and len(rows) == 66
    assert [(r[0], r[1]) for r in (rows[i] for i in range(66))] == [
        (keys[i], keys[j]) for i, j in itertools.combinations(range(12), 2)
    ]


def test_resume_after_injected_failure_equals_uninterrupted_run(tiny, tmp_path):
    model, variables, loader = tiny
    pairs = _pairs_csv(tmp_path / "p.csv", 150, 20)
    kw = dict(pairs_file=pairs, shard_size=16, progress=False, strategy="gather")
    full = str(tmp_path / "full")
    batch.run_batch(model, variables, loader, full, **kw)

    class Boom(Exception):
        pass

    def fail_after_three(s):
        if s == 2:
            raise Boom

    out = str(tmp_path / "out")
    with pytest.raises(Boom):
        batch.run_batch(model, variables, loader, out, on_shard=fail_after_three, **kw)
    shards = os.path.join(out, "shards")
    committed = sorted(f for f in os.listdir(shards) if f.endswith(".json"))
    assert committed == ["000000.json", "000001.json", "000002.json"]
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    before = {f: os.stat(os.path.join(shards, f)).st_mtime_ns for f in os.listdir(shards)}
    summary = batch.run_batch(model, variables, loader, out, **kw)
    assert summary["computed_shards"] == 10 - 3  # committed shards are not redone
    for f, t in before.items():
        assert os.stat(os.path.join(shards, f)).st_mtime_ns == t, f
    _assert_same(_all_records(out), _all_records(full))
    with pytest.raises(ValueError, match="different job"):
        batch.run_batch(model, variables, loader, out, **{**kw, "shard_size": 32})


def _child_files(tmp_path, pairs, shard):
    (tmp_path / "job.py").write_text(f"PAIRS = {pairs!r}\nSHARD = {shard}\n" + JOB)
    (tmp_path / "child.py").write_text(CHILD)


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    pairs = _pairs_csv(tmp_path / "p.csv", 400, 30)
    _child_files(tmp_path, pairs, 16)
    out = str(tmp_path / "out")
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), out, "0.15", "-", "0", "1"],
        env=_env(8),  # as this process: the resumed shards are bit for bit comparable
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    shards = os.path.join(out, "shards")
    deadline = time.time() + 600  # only a hang reaches it; load only delays
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(shards) and sum(f.endswith(".json") for f in os.listdir(shards)) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = sum(f.endswith(".json") for f in os.listdir(shards))
    assert 3 <= committed < 25 and not os.path.exists(os.path.join(out, "manifest.json"))

    sys.path.insert(0, str(tmp_path))
    try:
        import job  # the same job, in this process: resume, then a fresh uninterrupted run
    finally:
        sys.path.remove(str(tmp_path))
    sys.modules.pop("job", None)
    summary = job.run(out)
    assert summary["computed_shards"] == 25 - committed
    job.run(str(tmp_path / "full"))
    _assert_same(_all_records(out), _all_records(str(tmp_path / "full")))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two subprocesses, ~10 s on an idle 2-core machine; a hang fails at 600 s
def test_two_processes_with_jax_distributed_equal_one(tmp_path):
    pairs = _pairs_csv(tmp_path / "p.csv", 300, 40)
    _child_files(tmp_path, pairs, 32)
    coordinator = f"127.0.0.1:{_free_port()}"
    two = str(tmp_path / "two")
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "child.py"), two, "0", coordinator, str(p), "2"],
            env=_env(2),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for p in range(2)
    ]
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)  # a hang, not load
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a process of the job did not finish in 600 s")
        assert p.returncode == 0, err.decode()[-3000:]
    one = str(tmp_path / "one")  # the same job in this one process (8 devices)
    sys.path.insert(0, str(tmp_path))
    try:
        import job
    finally:
        sys.path.remove(str(tmp_path))
    sys.modules.pop("job", None)
    job.run(one)
    manifest = json.load(open(os.path.join(two, "manifest.json")))
    assert manifest["summary"]["written"] == 300
    # Both processes computed shards: process p takes shards p, p + 2, ...
    markers = [f for f in os.listdir(os.path.join(two, "shards")) if f.endswith(".json")]
    by = {json.load(open(os.path.join(two, "shards", f)))["process"] for f in markers}
    assert by == {0, 1}
    _assert_same(_all_records(two), _all_records(one), atol=1e-3)
