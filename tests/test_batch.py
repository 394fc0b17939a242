"""Batch jobs: output equals the paired maps, pairs index, top-k, resume after kills, two hosts."""

import io
import itertools
import json
import os
import signal
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

# The job every worker process of the kill and multi-worker tests runs (argv: out_dir,
# seconds each shard's commit waits, a pairs file or "-" for the job's, a file to log the
# shards this worker committed or "-"). A refused job exits 3 with its one line.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    out, sleep, pairs, log = sys.argv[1:5]
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    from job import run
    from pairviz_jax.batch import JobConflict, shards

    commit = shards.commit_dir
    def slow_commit(tmp, path):  # a worker holds each shard's claim a while, written, uncommitted
        time.sleep(float(sleep))
        return commit(tmp, path)
    shards.commit_dir = slow_commit

    def on_shard(s):
        if log != "-":
            with open(log, "a") as f:
                f.write(f"{s}\\n")
    try:
        run(out, on_shard=on_shard, **({} if pairs == "-" else {"pairs_file": pairs}))
    except JobConflict as e:
        print(e, file=sys.stderr)
        sys.exit(3)
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
        kw = {"pairs_file": PAIRS, "lease": 2.0, **kw}
        return batch.run_batch(
            model, variables, loader, out, shard_size=SHARD, progress=False,
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


def test_gallery_larger_than_the_device_budget_streams_equal_to_resident(
    tiny, tmp_path, monkeypatch
):
    """Top-k with maps over a gallery whose folded images exceed the device budget (1 byte
    here): the neighbours are found with the gallery streamed in blocks and the maps with W
    read per chunk of pairs, never more than a chunk's images at once; the records equal
    the run with every W on the devices. The old code held W of every image on each device."""
    model, variables, loader = tiny
    reads = []
    real = batch.embed.EmbedStore.w
    monkeypatch.setattr(
        batch.embed.EmbedStore, "w", lambda self, ids: reads.append(len(ids)) or real(self, ids)
    )
    queries = [str(i) for i in range(10)]
    gallery = [str(i) for i in range(4, 40)]
    kw = dict(images=queries, gallery=gallery, top_k=3, shard_size=8, embed_chunk=7, progress=False)
    resident = batch.run_batch(model, variables, loader, str(tmp_path / "r"), **kw)
    assert not resident["streamed"] and max(reads) == 40  # every image's W at once
    reads.clear()
    streamed = batch.run_batch(model, variables, loader, str(tmp_path / "s"), device_budget=1, **kw)
    assert streamed["streamed"] and streamed["written"] == 30
    assert max(reads) <= 2 * jax.local_device_count() < 40  # one chunk of pairs' images
    r, s = batch.BatchResults(str(tmp_path / "r")), batch.BatchResults(str(tmp_path / "s"))
    np.testing.assert_array_equal(r.pairs(np.arange(30)), s.pairs(np.arange(30)))
    _assert_same(_all_records(str(tmp_path / "r")), _all_records(str(tmp_path / "s")), atol=1e-3)


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
    committed = sorted(f for f in os.listdir(shards) if f.isdigit())
    assert committed == ["000000", "000001", "000002"]
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
    extra = env.get("PAIRVIZ_TEST_XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {extra}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(tmp_path, out, sleep, pairs="-", log="-", name="w"):
    """A worker process (8 devices, as this process: its shards compare bit for bit)."""
    err = open(tmp_path / f"{name}.err", "w")
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), str(out), str(sleep), pairs, log],
        env=_env(8),
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    proc.err_path = tmp_path / f"{name}.err"
    return proc


def _finish(procs, timeout=600):
    """Waits for every process (generous: a loaded 2-core machine); their exit codes."""
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a worker did not finish in {timeout} s")
    return codes


def _stderr(proc):
    return proc.err_path.read_text()


def _job_module(tmp_path):
    sys.path.insert(0, str(tmp_path))
    try:
        import job
    finally:
        sys.path.remove(str(tmp_path))
    sys.modules.pop("job", None)
    return job


def _committed(out):
    return sorted(f for f in os.listdir(os.path.join(out, "shards")) if f.isdigit())


def _leftovers(out):
    """Temporary files or directories left anywhere the job writes."""
    return [
        f for d in ("", "shards", "embed") for f in os.listdir(os.path.join(out, d)) if ".tmp" in f
    ]


def _worker_temp_dirs(out, pid):
    """Shards process ``pid`` has written but not committed (its temporary directories)."""
    tokens = set()
    workers = os.path.join(out, "workers")
    for f in os.listdir(workers) if os.path.isdir(workers) else []:
        try:
            if json.load(open(os.path.join(workers, f)))["pid"] == pid:
                tokens.add(f[: -len(".json")])
        except (OSError, ValueError):
            continue
    shards = os.path.join(out, "shards")
    return [f for f in os.listdir(shards) if f.endswith(".tmp") and f.split(".")[2] in tokens]


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    pairs = _pairs_csv(tmp_path / "p.csv", 400, 30)
    _child_files(tmp_path, pairs, 16)
    out = str(tmp_path / "out")
    proc = _spawn(tmp_path, out, 0.15)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(os.path.join(out, "shards")) and len(_committed(out)) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, _stderr(proc)[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = len(_committed(out))
    assert 3 <= committed < 25 and not os.path.exists(os.path.join(out, "manifest.json"))

    job = _job_module(tmp_path)  # the same job, in this process: resume, then a clean run
    summary = job.run(out)  # takes the dead worker's claim over once its lease (2 s) expires
    assert summary["computed_shards"] == 25 - committed
    assert _leftovers(out) == []  # the dead worker's half-written shard was removed
    job.run(str(tmp_path / "full"))
    _assert_same(_all_records(out), _all_records(str(tmp_path / "full")))


@pytest.mark.slow
def test_two_different_jobs_on_one_directory_one_is_refused(tmp_path):
    """Two different pairs files started together on one --out: one job is refused in one
    line (exit 3 here), the other completes and equals a clean run of it. On the old code
    both exited 0 with most shards matching neither job."""
    job_a = _pairs_csv(tmp_path / "a.csv", 120, 20, seed=1)
    job_b = _pairs_csv(tmp_path / "b.csv", 150, 24, seed=2)
    _child_files(tmp_path, job_a, 16)
    out = tmp_path / "out"
    procs = [_spawn(tmp_path, out, 0.05, pairs=p, name=n) for p, n in ((job_a, "a"), (job_b, "b"))]
    codes = _finish(procs)
    assert sorted(codes) == [0, 3], [_stderr(p)[-2000:] for p in procs]
    won = codes.index(0)
    refused = _stderr(procs[1 - won]).strip()
    assert "holds a different job" in refused and refused.count("\n") == 0, refused
    clean = str(tmp_path / "clean")
    _job_module(tmp_path).run(clean, pairs_file=(job_a, job_b)[won])
    _assert_same(_all_records(str(out)), _all_records(clean))


@pytest.mark.slow
def test_same_job_started_twice_computes_each_shard_once(tmp_path):
    """The same command started twice at once: both exit 0, every shard is committed by
    exactly one of them, no temporary file is left, and the result equals a clean run.
    On the old code 15 of 25 shards were computed twice and one run could crash."""
    pairs = _pairs_csv(tmp_path / "p.csv", 300, 30)
    _child_files(tmp_path, pairs, 16)
    out = tmp_path / "out"
    logs = [str(tmp_path / f"log{i}") for i in range(2)]
    procs = [_spawn(tmp_path, out, 0.1, log=log, name=f"w{i}") for i, log in enumerate(logs)]
    assert _finish(procs) == [0, 0], [_stderr(p)[-2000:] for p in procs]
    done = [int(x) for log in logs if os.path.exists(log) for x in open(log).read().split()]
    assert sorted(done) == list(range(19))  # 300 pairs in shards of 16: each once
    assert _leftovers(str(out)) == []
    clean = str(tmp_path / "clean")
    _job_module(tmp_path).run(clean)
    _assert_same(_all_records(str(out)), _all_records(clean))


@pytest.mark.slow
def test_three_workers_one_killed_midway_then_restarted(tmp_path):
    """Three workers of one job; one is SIGKILLed while it holds a written, uncommitted
    shard. The two others take its shard over when its lease expires and finish the job;
    the killed worker restarted finds it complete. Every record is written once (each
    shard committed once), equal to a clean run, nothing temporary left."""
    pairs = _pairs_csv(tmp_path / "p.csv", 400, 30)
    _child_files(tmp_path, pairs, 16)
    out = tmp_path / "out"
    logs = [str(tmp_path / f"log{i}") for i in range(3)]
    victim = _spawn(tmp_path, out, 1.0, log=logs[0], name="victim")
    deadline = time.time() + 600  # the victim starts first: it surely holds shards
    while time.time() < deadline and victim.poll() is None:
        if os.path.isdir(out / "shards") and len(_committed(str(out))) >= 2:
            break
        time.sleep(0.01)
    others = [_spawn(tmp_path, out, 0.3, log=logs[i], name=f"w{i}") for i in (1, 2)]
    while time.time() < deadline and victim.poll() is None:
        if _worker_temp_dirs(str(out), victim.pid) and len(_committed(str(out))) >= 4:
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert victim.wait(timeout=600) == -signal.SIGKILL, _stderr(victim)[-2000:]
    assert not os.path.exists(out / "manifest.json")
    assert _finish(others) == [0, 0], [_stderr(p)[-2000:] for p in others]
    restarted = _spawn(tmp_path, out, 0.0, log=logs[0], name="restarted")
    assert _finish([restarted]) == [0], _stderr(restarted)[-2000:]
    done = [int(x) for log in logs if os.path.exists(log) for x in open(log).read().split()]
    assert sorted(done) == list(range(25))  # the victim's last shard: computed by another
    assert _leftovers(str(out)) == []
    clean = str(tmp_path / "clean")
    _job_module(tmp_path).run(clean)
    _assert_same(_all_records(str(out)), _all_records(clean))
