"""Batch jobs at scale: pairs/s and peak memory for 10^5 and 10^6 pairs among 1,000 images.

Each size runs in a fresh subprocess (so its peak RSS is its own): the whole
job of ``pairviz_jax.batch.run_batch`` on a pairs file of uniformly random
pairs among 1,000 demo test images (decode, embed + fold each image once,
maps in compiled chunks, float16 shards written to a temporary directory).
The same images' 1,000 forwards alone (compiled, preloaded, same batch size)
are timed in the parent for comparison.

The model is the trained demo model when ``--workdir`` points to a training
run (``python train.py --config configs/demo.py --workdir runs/demo``), else
the same architecture (``--config``) with random weights: the cost does not
depend on the weights.

Run:  python benchmarks/batch.py                         # random demo-sized ViT
      python benchmarks/batch.py --workdir pairviz_jax/plotting/assets/demo_run.npz
      python benchmarks/batch.py --shard_size 16384      # another shard size
      taskset -c 0,1 python benchmarks/batch.py          # on 2 CPU cores

The default shard size is the library's and ``visualize.py batch``'s
(``pairviz_jax.batch.DEFAULT_SHARD_SIZE``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _load_model(args):
    """(model, variables, image size, (mean, std), description)."""
    import jax
    import jax.numpy as jnp

    from pairviz_jax.data import preprocess

    if args.workdir:
        from pairviz_jax.runs import load_run

        m = load_run(args.workdir)
        return m.model, m.variables, m.image_size[0], (m.mean, m.std), f"trained ({m.label})"
    import importlib.util

    from pairviz_jax.train import build_model

    spec = importlib.util.spec_from_file_location("demo_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    model = build_model(config.model)
    size = int(config.input.image_size)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    what = f"the architecture of {args.config} with random weights"
    return model, variables, size, preprocess.NORMALIZATION["demo"], what


def _loader(size: int, images: int, normalization):
    from pairviz_jax import batch
    from pairviz_jax.data import demo

    per_class = -(-images // len(demo.TEST_GLYPHS))
    return batch.ImageLoader(
        size, normalization, dataset="demo", split="test", demo_examples_per_class=per_class
    )


def child(args) -> None:
    """One job in this process; prints a JSON line with the measurements."""
    from pairviz_jax import batch

    model, variables, size, norm, _ = _load_model(args)
    loader = _loader(size, args.images, norm)
    out = tempfile.mkdtemp(prefix=f"out_{args.pairs}_{args.shard_size}_", dir=args.tmp)
    t = time.perf_counter()
    summary = batch.run_batch(
        model,
        variables,
        loader,
        out,
        pairs_file=os.path.join(args.tmp, f"pairs_{args.pairs}.csv"),
        shard_size=args.shard_size,
        embed_batch=args.batch,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - t
    shutil.rmtree(out)  # each run writes a new job (a rerun would resume the old one)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, **summary}))


def forwards_alone(args) -> float:
    """Seconds for the 1,000 compiled forwards of preloaded images (median of 3)."""
    import jax

    from pairviz_jax import explain

    model, variables, size, norm, _ = _load_model(args)
    loader = _loader(size, args.images, norm)
    x = np.stack([loader(str(i)) for i in range(args.images)])
    fwd = jax.jit(lambda v, b: explain.embed(model, v, b))
    b = args.batch
    pad = -len(x) % b
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    jax.block_until_ready(fwd(variables, x[:b]))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for s in range(0, len(x), b):
            jax.block_until_ready(fwd(variables, x[s : s + b]))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_pairs(path: str, pairs: int, images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("a,b\n")
        for s in range(0, pairs, 100_000):
            ab = rng.integers(0, images, (min(100_000, pairs - s), 2))
            f.write("".join(f"{a},{b}\n" for a, b in ab))


def build_parser() -> argparse.ArgumentParser:
    from pairviz_jax.batch import DEFAULT_SHARD_SIZE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", default=None, help="a demo training run (else random weights)")
    p.add_argument("--config", default="configs/demo.py", help="architecture without --workdir")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--sizes", default="100000,1000000", help="pair counts, comma-separated")
    p.add_argument("--shard_size", type=int, default=DEFAULT_SHARD_SIZE)
    p.add_argument("--batch", type=int, default=64, help="images per forward batch")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--compare_shard_sizes", default="", help="also run these shard sizes (comma-separated)"
    )
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds per shard size")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        args.pairs = args.child
        child(args)
        return

    import jax

    *_, what = _load_model(args)
    print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, ", end="")
    print(f"{len(os.sched_getaffinity(0))} CPU cores available; model: {what}")
    t_fwd = forwards_alone(args)
    print(f"{args.images:,} forwards alone (preloaded, compiled): {t_fwd:.2f} s")
    sizes = [args.shard_size] + [
        int(x) for x in (args.compare_shard_sizes or "").split(",") if x.strip()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            write_pairs(os.path.join(tmp, f"pairs_{n}.csv"), n, args.images)
            totals: dict[int, list[float]] = {size: [] for size in sizes}
            for _ in range(args.rounds):  # interleaved: the machine is shared and noisy
                for size in sizes:
                    cmd = [sys.executable, __file__, "--child", str(n), "--tmp", tmp]
                    cmd += [a for a in (argv if argv is not None else sys.argv[1:])]
                    cmd += ["--shard_size", str(size)]
                    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    totals[size].append(r["seconds"])
                    print(
                        f"{n:>9,} pairs: {r['seconds']:6.1f} s total = "
                        f"{r['prepare_seconds']:5.1f} s inputs + embedding (decode "
                        f"{args.images:,} images, forward, fold) + "
                        f"{r['seconds'] - r['prepare_seconds']:5.1f} s pairs "
                        f"({r['pairs_per_s']:,.0f} pairs/s, maps + writing); peak RSS "
                        f"{r['peak_mb']:,.0f} MB; {r['seconds'] / t_fwd:.1f}x the forwards "
                        f"alone; shard size {size:,}"
                    )
            if len(sizes) > 1:
                base = totals[sizes[0]]
                for size in sizes[1:]:
                    ratio = statistics.median(
                        b / a for a, b in zip(base, totals[size], strict=True)
                    )
                    print(
                        f"{n:>9,} pairs: shard size {size:,} takes {ratio:.2f}x the time of "
                        f"{sizes[0]:,} (median of {args.rounds} interleaved rounds)"
                    )


if __name__ == "__main__":
    main()
