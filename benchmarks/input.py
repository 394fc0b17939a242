"""Input-pipeline throughput against a ViT-S/16 training step, on this machine.

Writes a small image folder of photo-sized JPEGs (or reads a prepared dataset), runs
``make_dataset(..., train=True)`` at 256 px (decode, random-resized-crop, flip, batch)
and prints decoded-and-augmented images/s, then times a jitted ViT-S/16 training step
(forward + backward + SGD update, float32) at the same size and says which is slower::

    python benchmarks/input.py                      # synthetic 500 x 375 JPEGs
    python benchmarks/input.py --dataset sop --data_dir ~/tensorflow_datasets
    python benchmarks/input.py --skip_model         # input only

The input pipeline is not the bottleneck when its images/s exceed the step's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pairviz_jax.data import make_dataset  # noqa: E402
from pairviz_jax.data.prepare import prepare  # noqa: E402


def write_photos(root: str, num_images: int, size: tuple[int, int], num_classes: int = 8) -> None:
    """JPEGs with photo-like statistics (gradients, shapes, noise) in <split>/<class>/."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(num_images):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx / w * rng.uniform(0.2, 1) + yy / h * rng.uniform(0.2, 1))[..., None] / 2
        base = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (h, w, 3))
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            box = (x0, y0, x0 + rng.uniform(10, w / 2), y0 + rng.uniform(10, h / 2))
            draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        folder = os.path.join(root, "train", f"class_{i % num_classes}")
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def input_rate(name, split, data_dir, *, image_size, batch_size, steps, num_threads) -> float:
    """Decoded-and-augmented images/s of the training pipeline (after one warm-up batch)."""
    ds = make_dataset(
        name,
        split,
        data_dir=data_dir,
        image_size=image_size,
        train=True,
        seed=0,
        batch_size=batch_size,
        num_threads=num_threads,
        shard_index=0,
        shard_count=1,
    )
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
    elapsed = time.perf_counter() - start
    assert batch["image"].shape == (batch_size, image_size, image_size, 3)
    return steps * batch_size / elapsed


def model_rate(image_size: int, batch_size: int, steps: int) -> float:
    """Images/s of a jitted ViT-S/16 training step (forward, backward, SGD update)."""
    import jax
    import jax.numpy as jnp

    from pairviz_jax.models import ViT, decode_variant

    model = ViT(**decode_variant("S/16"), pool_type="gap", proj_dim=512)
    images = jnp.zeros((batch_size, image_size, image_size, 3), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), images[:1])["params"]

    @jax.jit
    def step(params, images):
        def loss_fn(p):
            emb, _ = model.apply({"params": p}, images)
            return jnp.mean(jnp.square(emb - 1.0))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), loss

    params, loss = step(params, images)
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        params, loss = step(params, images)
    loss.block_until_ready()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="a prepared dataset (default: synthetic)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--num_images", type=int, default=256, help="synthetic images")
    parser.add_argument("--photo_size", type=int, nargs=2, default=(500, 375), help="W H")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model_batch_size", type=int, default=16)
    parser.add_argument("--model_steps", type=int, default=2)
    parser.add_argument("--skip_model", action="store_true")
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        name, data_dir = args.dataset, args.data_dir
        if name is None:
            name, data_dir = "image_folder", os.path.join(tmp, "tfds")
            write_photos(os.path.join(tmp, "photos"), args.num_images, tuple(args.photo_size))
            start = time.perf_counter()
            prepare("image_folder", os.path.join(tmp, "photos"), data_dir=data_dir)
            rate = args.num_images / (time.perf_counter() - start)
            w, h = args.photo_size
            print(f"prepare (check + write array_record), {w}x{h} JPEGs: {rate:8.1f} images/s")
        for threads in sorted({1, cpus}):
            rate = input_rate(
                name,
                args.split,
                data_dir,
                image_size=args.image_size,
                batch_size=args.batch_size,
                steps=args.steps,
                num_threads=threads,
            )
            print(
                f"input, train, {args.image_size} px, batch {args.batch_size}, "
                f"{threads} thread(s): {rate:8.1f} images/s"
            )
    if args.skip_model:
        return
    step_rate = model_rate(args.image_size, args.model_batch_size, args.model_steps)
    print(
        f"ViT-S/16 train step, {args.image_size} px, batch {args.model_batch_size}: "
        f"{step_rate:8.1f} images/s"
    )
    verdict = "is not" if rate > step_rate else "IS"
    print(f"the input pipeline {verdict} the bottleneck ({rate / step_rate:.1f}x the step's rate)")


if __name__ == "__main__":
    main()
