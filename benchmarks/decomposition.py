"""How much of the cosine the token contributions account for, per pooling, on a real model.

For every pooling the embedding splits exactly as ``beta = sum_j v_j + rest``
(``pairviz_jax.explain.decompose``); the cosine of a pair then splits into the tokens' share
``sum_j v_j . u_b / |beta_a|`` and the remainder's ``rest . u_b / |beta_a|``. This script
measures, on real photo pairs (``pairviz_jax.data.photos``, copy-paste pairs, both halves), the
tokens' share of the score and, with the transpose convention, the share that lands on the
patches (the rest stays on the class and register tokens), as mean +- standard error.

    python benchmarks/decomposition.py --weights DINOV2_FILE_OR_FOLDER [--pairs 64]

Nothing is chosen here by looking at results: the numbers describe the decomposition.
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import numpy as np

from pairviz_jax import checkpoints
from pairviz_jax import explain as ex
from pairviz_jax.data import photos


def _mean_se(x: np.ndarray) -> str:
    x = np.asarray(x, np.float64)
    return f"{x.mean():.3f} ± {x.std(ddof=1) / np.sqrt(len(x)):.3f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="a weight file or Hugging Face folder")
    p.add_argument("--pairs", type=int, default=64, help="pairs per photo half")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--pools", default="gap,tok,gap_tok", help="comma-separated pool types")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)

    ckpt = checkpoints.read(args.weights)
    info = checkpoints.describe(ckpt)
    norm = info.get("normalization") or {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])
    print(f"{args.weights}: {info['layout']}, {args.image_size} px, {args.pairs} pairs per half")
    print("| pooling | half | score | tokens' share of the score | on the patches (transpose) |")
    print("|---|---|---|---|---|")
    for pool in args.pools.split(","):
        model = checkpoints.model_from(ckpt, pool_type=pool)
        variables = checkpoints.load(ckpt, model, image_size=args.image_size)
        for half in ("a", "b"):
            pairs = photos.make_pairs(
                args.pairs, seed=0, size=args.image_size, split=half, distractor=True
            )
            st = photos.stack(pairs)
            scores, tokens, patches = [], [], []
            t0 = time.perf_counter()
            for i in range(0, args.pairs, args.batch):
                a = jnp.asarray((st["a"][i : i + args.batch] / 255.0 - mean) / std, jnp.float32)
                b = jnp.asarray((st["b"][i : i + args.batch] / 255.0 - mean) / std, jnp.float32)
                out = ex.paired_maps(
                    model, variables, a, b, convention="transpose", upsampled=False
                )
                for side in ("a", "b"):
                    s = np.asarray(out["score"])
                    scores.append(s)
                    tokens.append((s - np.asarray(out[f"rest_{side}"])) / s)
                    patches.append(np.asarray(out[f"map_{side}"]).sum((1, 2)) / s)
            dt = time.perf_counter() - t0
            print(
                f"| {pool} | {half} | {_mean_se(np.concatenate(scores))} | "
                f"{_mean_se(np.concatenate(tokens))} | {_mean_se(np.concatenate(patches))} |"
                f"  <!-- {dt:.0f} s -->"
            )


if __name__ == "__main__":
    main()
