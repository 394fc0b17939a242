"""Train-step throughput (images/s) of the demo model and of the paper's ViT-B/16.

    python benchmarks/train.py                      # all configs, default batch sizes
    python benchmarks/train.py --configs vit_b16 --batch_size 64 --steps 10

Times the jitted, donated ``train_step`` on random uint8 images (normalised on device) over
every local device, after one compilation step; the input pipeline is not included (see
``benchmarks/input.py``). Prints one line per config.
"""

import argparse
import importlib.util
import os
import time

import jax
import numpy as np

from pairviz_jax.train import loop, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(path, arg=None):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def configs():
    tiny = _config("demo.py")
    tiny.input.name = "synthetic"
    tiny.num_classes = 24
    vit = _config("sop.py", "vit_b16")
    vit.num_classes = 11318
    if jax.default_backend() == "cpu":
        vit.model.dtype = "float32"  # bfloat16 matmuls are emulated (slow) on CPU
    return {"demo": (tiny, 64), "vit_b16": (vit, 8 if jax.default_backend() == "cpu" else 128)}


def bench(config, batch_size, steps):
    config.batch_size = batch_size
    mesh = sharding.make_mesh()
    run = loop.build(config, mesh)
    size = int(config.input.image_size)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
        "label": rng.integers(0, run.num_classes, (batch_size,), np.int32),
    }
    batch = sharding.global_batch(batch, mesh)
    state = run.state
    t0 = time.perf_counter()
    state, m = run.step_fn(state, batch, run.step_rng)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = run.step_fn(state, batch, run.step_rng)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / steps
    return compile_s, dt


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=["demo", "vit_b16"])
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    devices = jax.devices()
    print(f"backend {jax.default_backend()}, {len(devices)} x {devices[0].device_kind}")
    for name, (config, default_bs) in configs().items():
        if name not in args.configs:
            continue
        bs = args.batch_size or default_bs
        compile_s, dt = bench(config, bs, args.steps)
        print(
            f"{name:8s} batch {bs:4d}  {config.input.image_size}px  {config.model.dtype:8s}"
            f"  {1 / dt:7.2f} steps/s  {bs / dt:8.1f} images/s  (compile {compile_s:.1f}s)"
        )


if __name__ == "__main__":
    main()
