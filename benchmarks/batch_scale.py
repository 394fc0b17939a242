"""Batch jobs across workers and galleries: 1 vs 2 workers, and 10^3 vs 10^5 distinct images.

Two measurements, every job in fresh subprocesses (so each peak RSS is its own):

* ``workers``: one pairs job (``--pairs`` uniformly random pairs among ``--pair_images``
  images) run by 1 worker, then by ``--workers`` workers started together on one output
  directory (``pairviz_jax.batch`` claims: no coordinator, no collectives): the same total
  work. Wall time from the first start to the last exit, startup included.
* ``gallery``: ``--queries`` queries, each against its top-10 neighbours with maps, in a
  gallery of 10^3 and of 10^5 distinct images (``--galleries``), with a device budget of
  ``--device_budget_mb`` so that W of the images streams from disk: throughput (images
  folded per second, pairs per second) and peak RSS against the small gallery's.

The images are synthetic (a seeded random image per key: decoding is not what is
measured; ``--demo`` draws demo glyphs instead, ~10 ms each) and the model is a tiny ViT
(``--variant mu/4`` at 16 px, random weights): the cost of the job's machinery, not of a
real model. The same script runs unchanged on a GPU or TPU host (``JAX_PLATFORMS`` as
usual); ``--devices N`` fakes N CPU devices per worker.

Run:  python benchmarks/batch_scale.py                      # both, defaults
      python benchmarks/batch_scale.py --only gallery --galleries 1000,100000
      python benchmarks/batch_scale.py --only workers --workers 2 --pairs 400000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SyntheticLoader:
    """key -> a seeded random image, float32 [H, W, 3] (microseconds, not a decoder)."""

    def __init__(self, size: int):
        self.image_size = (size, size)

    def fingerprint(self):
        return {"synthetic": list(self.image_size)}

    def __call__(self, key: str) -> np.ndarray:
        rng = np.random.default_rng(int(key.rsplit(":", 1)[-1]))
        return rng.standard_normal((*self.image_size, 3), dtype=np.float32)


def _model(args):
    import jax
    import jax.numpy as jnp

    from pairviz_jax.models import ViT, decode_variant

    model = ViT(**decode_variant(args.variant), proj_dim=args.proj_dim)
    x = jnp.zeros((1, args.image_size, args.image_size, 3))
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), x)


def _loader(args, n: int):
    if not args.demo:
        return SyntheticLoader(args.image_size)
    from pairviz_jax import batch
    from pairviz_jax.data import demo

    return batch.ImageLoader(
        args.image_size,
        "demo",
        dataset="demo",
        split="test",
        demo_examples_per_class=-(-n // len(demo.TEST_GLYPHS)),
    )


def child(args) -> None:
    """One worker of one job; prints a JSON line with its summary and peak RSS."""
    from pairviz_jax import batch

    model, variables = _model(args)
    spec = json.loads(args.child)
    kw = dict(
        shard_size=args.shard_size,
        progress=False,
        device_budget=int(args.device_budget_mb * 2**20),
        embed_batch=args.batch,
    )
    if spec["kind"] == "workers":
        loader = _loader(args, args.pair_images)
        kw["pairs_file"] = spec["pairs_file"]
        kw["device_budget"] = batch.DEFAULT_DEVICE_BUDGET  # as the command's default
    else:
        n = spec["gallery"]
        loader = _loader(args, n + args.queries)
        kw["images"] = [str(i) for i in range(args.queries)]
        kw["gallery"] = [str(i) for i in range(args.queries, args.queries + n)]
        kw["top_k"] = 10
    summary = batch.run_batch(model, variables, loader, spec["out"], **kw)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**summary, "peak_mb": peak}))


def _spawn(args, spec: dict, devices: int) -> subprocess.Popen:
    env = dict(os.environ)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, *sys.argv[1:], "--child", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a worker failed with exit status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def workers(args, tmp: str) -> None:
    pairs_file = os.path.join(tmp, "pairs.csv")
    rng = np.random.default_rng(0)
    with open(pairs_file, "w") as f:
        for a, b in rng.integers(0, args.pair_images, (args.pairs, 2)):
            f.write(f"{a},{b}\n")
    base = None
    for n in (1, args.workers):
        spec = {"kind": "workers", "pairs_file": pairs_file, "out": os.path.join(tmp, f"w{n}")}
        t = time.perf_counter()
        procs = [_spawn(args, spec, args.devices) for _ in range(n)]
        results = [_result(p) for p in procs]
        wall = time.perf_counter() - t
        base = base or wall
        shards = [r["computed_shards"] for r in results]
        peaks = ", ".join(f"{r['peak_mb']:,.0f}" for r in results)
        job = max(r["seconds"] for r in results)  # from each worker's run_batch call
        print(
            f"{n} worker{'s' * (n > 1)}: {args.pairs:,} pairs among {args.pair_images:,} images "
            f"in {wall:.1f} s wall ({args.pairs / wall:,.0f} pairs/s, {base / wall:.2f}x one "
            f"worker; {job:.1f} s in run_batch, after imports and model init); shards per "
            f"worker {shards}; peak RSS per worker "
            f"{peaks} MB"
        )


def gallery(args, tmp: str) -> None:
    first = None
    for n in (int(g) for g in args.galleries.split(",")):
        spec = {"kind": "gallery", "gallery": n, "out": os.path.join(tmp, f"g{n}")}
        t = time.perf_counter()
        r = _result(_spawn(args, spec, args.devices))
        wall = time.perf_counter() - t
        images = n + args.queries
        first = first or r
        print(
            f"top-10 of {args.queries:,} queries in a gallery of {n:,} ({images:,} distinct "
            f"images): {wall:.1f} s wall, fold + top-k {r['prepare_seconds']:.1f} s "
            f"({images / r['prepare_seconds']:,.0f} images/s), maps {r['pairs_per_s']:,.0f} "
            f"pairs/s ({r['written']:,} pairs, streamed: {r['streamed']}); peak RSS "
            f"{r['peak_mb']:,.0f} MB ({r['peak_mb'] / first['peak_mb']:.2f}x the first)"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=("workers", "gallery"), default=None)
    p.add_argument("--variant", default="mu/4")
    p.add_argument("--proj_dim", type=int, default=8)
    p.add_argument("--image_size", type=int, default=16)
    p.add_argument("--demo", action="store_true", help="demo glyph images, not synthetic")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pairs", type=int, default=400_000)
    p.add_argument("--pair_images", type=int, default=2000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--galleries", default="1000,100000")
    p.add_argument("--device_budget_mb", type=float, default=0.5)
    p.add_argument("--shard_size", type=int, default=16384)
    p.add_argument("--batch", type=int, default=256, help="images per forward batch")
    p.add_argument("--devices", type=int, default=0, help="fake CPU devices per worker")
    p.add_argument("--tmp", default=None, help="where the jobs write (default: a temp dir)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        child(args)
        return
    import jax

    print(
        f"jax {jax.__version__}, {jax.local_device_count()} x {jax.devices()[0].device_kind} "
        f"per worker, {len(os.sched_getaffinity(0))} CPU cores available; model "
        f"{args.variant} at {args.image_size} px, random weights; "
        f"{'demo glyph' if args.demo else 'synthetic'} images"
    )
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if args.only in (None, "workers"):
            workers(args, tmp)
        if args.only in (None, "gallery"):
            gallery(args, tmp)


if __name__ == "__main__":
    main()
