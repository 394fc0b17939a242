"""How much the explanation costs next to the embedding it explains.

(a) ``paired_maps`` on a batch of pairs / the embedding-only forward pass of
    the same images (ViT-B/16 at 256 px, 8 pairs by default). Both compiled,
    timed interleaved (a, b, a, b, ...), medians reported.
(b) ``cross_maps`` for all pairs of a set of images (1,000 x 1,000 = 10^6
    pairs by default) after the forwards: pairs per second, and its time
    relative to the 1,000 forwards it follows (per-image forward time measured
    in (a), times 1,000). Token and
    attention values do not change the cost, so the features are synthetic
    with the real shapes; folding (rollout + R @ alpha) is timed with the
    pairs.

(c) The embedding-only forward three ways on the same images (12 by default),
    interleaved: the plain jitted ``model.apply(v, x)[0]``, ``explain.features`` (which
    also collects the head-fused attention), and the project's embedding path
    (``explain.embed``). With jax 0.10 on CPU, XLA:CPU's
    YNNPACK fusion (``__ynn_fusion``) put each block's ``q k^T -> softmax -> @ v`` into one
    kernel when the softmax had no other consumer, 1.3-1.7x slower than the two products
    with the softmax written out between them (printed below as the attention core alone),
    which made the plain forward slower than ``features``. The attention now normalises
    after the product (``models.layers.MultiHeadAttention``); the compiled HLO is checked
    for the fused kernel (0 expected).
(d) DINOv2-S/14 at 224 px (12 blocks, width 384, layer scale, class-token pooling): the
    embedding-only forward of 2B images against ``paired_maps`` of B pairs for the
    class-token split (``pool_type="tok"``) and the paper's mean pool (``"gap"``). The
    weights are random with the real shapes (cost does not depend on values), or a real
    file with ``--dinov2 FILE_OR_FOLDER``.

Run:  python benchmarks/explain.py            # CPU or the default accelerator
      python benchmarks/explain.py --variant S/16 --repeats 5
      python benchmarks/explain.py --only-forward   # (c) alone
      python benchmarks/explain.py --only-dinov2    # (d) alone
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain as ex
from pairviz_jax.models import ViT, decode_variant


def _time(fn, *args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def bench_pairs(model, variables, images_a, images_b, repeats: int) -> dict[str, float]:
    both = jnp.concatenate([images_a, images_b])
    embed = jax.jit(lambda v, x: model.apply(v, x)[0])
    explain = lambda v, a, b: ex.paired_maps(model, v, a, b)  # noqa: E731
    _time(embed, variables, both)  # compile
    _time(explain, variables, images_a, images_b)
    t_embed, t_explain = [], []
    for _ in range(repeats):  # interleaved: the machine is shared and noisy
        t_embed.append(_time(embed, variables, both))
        t_explain.append(_time(explain, variables, images_a, images_b))
    return {
        "embed_s": statistics.median(t_embed),
        "explain_s": statistics.median(t_explain),
        "per_image_forward_s": statistics.median(t_embed) / both.shape[0],
    }


def _fused_attention_kernels(fn, *args) -> int:
    """Fusions in ``fn``'s compiled HLO whose root is the attention's second product and
    that also compute the softmax (an ``exponential`` inside the same fused computation)."""
    import re

    text = fn.lower(*args).compile().as_text()
    count = 0
    for block in re.split(r"\n\n", text):
        if "hqk,...khd->...qhd" in block and "ROOT" in block and " exponential(" in block:
            count += 1
    return count


def bench_forward(model, variables, images, repeats: int) -> dict[str, Any]:
    """(c): plain ``model.apply`` vs ``features`` vs ``embed``, interleaved."""
    plain = jax.jit(lambda v, x: model.apply(v, x)[0])
    ours = jax.jit(lambda v, x: ex.embed(model, v, x))
    feats = lambda v, x: ex.features(model, v, x, head_fusion="mean")  # noqa: E731
    fns = {"apply": plain, "features": feats, "embed": ours}
    for fn in fns.values():
        _time(fn, variables, images)  # compile
    np.testing.assert_allclose(
        np.asarray(plain(variables, images)), np.asarray(ours(variables, images)), atol=1e-5
    )
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_time(fn, variables, images))
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    for k in ("features", "embed"):
        out[f"apply/{k}"] = statistics.median(
            a / b for a, b in zip(times["apply"], times[k], strict=True)
        )
    out["fused_kernels"] = {
        "apply": _fused_attention_kernels(plain, variables, images),
        "embed": _fused_attention_kernels(ours, variables, images),
    }
    return out


def bench_attention_core(b: int, n: int, h: int, d: int, repeats: int) -> dict[str, float]:
    """One attention block's core, fused (softmax's only consumer is ``@ v``) vs apart."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for _ in range(3))

    def attention(q, k, v):
        w = jax.nn.softmax(jnp.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(d), axis=-1)
        return jnp.einsum("...hqk,...khd->...qhd", w, v), w

    fused = jax.jit(lambda q, k, v: attention(q, k, v)[0])
    apart = jax.jit(lambda q, k, v: (lambda o, w: (o, w.sum()))(*attention(q, k, v)))
    for fn in (fused, apart):
        _time(fn, q, k, v)
    tf, ta = [], []
    for _ in range(repeats):
        tf.append(_time(fused, q, k, v))
        ta.append(_time(apart, q, k, v))
    ratio = statistics.median(a / b for a, b in zip(tf, ta, strict=True))
    return {"fused_s": statistics.median(tf), "apart_s": statistics.median(ta), "ratio": ratio}


def synthetic_features(model, n: int, size: int, seed: int = 0) -> ex.Features:
    """Features with the shapes a forward pass gives (fused attention), random values."""
    gh, gw = model.grid((size, size, 3))
    tokens_n = gh * gw
    n_attn = tokens_n + model.num_prefix_tokens
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    tokens = jax.random.normal(k1, (n, tokens_n, model.embedding_dim)) + 0.1
    attention = jax.nn.softmax(jax.random.normal(k2, (n, model.depth, n_attn, n_attn)), -1)
    return ex.Features(
        embedding=tokens.mean(1),
        tokens=tokens,
        attention=attention,
        grid=(gh, gw),
        head_fusion="mean",
    )


def bench_cross(model, size: int, images: int, chunk: int) -> dict[str, float]:
    """Folds every image once, then maps every chunk of queries against all images."""
    feats = synthetic_features(model, chunk, size)  # one chunk, reused: values don't matter
    fold = jax.jit(lambda f: ex.fold(f))
    cross = jax.jit(lambda q, g: ex.cross_maps(q, g))
    folded = fold(feats)
    g_folded = ex.Folded(
        w=jnp.tile(folded.w, (images // chunk, 1, 1)),
        unit=jnp.tile(folded.unit, (images // chunk, 1)),
        grid=folded.grid,
    )
    jax.block_until_ready((folded, g_folded))
    _time(cross, folded, g_folded)  # compile
    t0 = time.perf_counter()
    for _ in range(images // chunk):  # every image folded once
        jax.block_until_ready(fold(feats))
    t_fold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(images // chunk):
        jax.block_until_ready(cross(folded, g_folded))
    t_cross = time.perf_counter() - t0
    return {"fold_s": t_fold, "cross_s": t_cross, "pairs": images * images}


def bench_dinov2(path: str | None, pairs: int, repeats: int) -> dict[str, float]:
    """(d): DINOv2-S/14 at 224 px, forward of 2B images vs paired maps of B pairs."""
    from pairviz_jax import checkpoints

    if path:
        ckpt = checkpoints.read(path)
        base = checkpoints.model_from(ckpt)
        variables = checkpoints.load(ckpt, base, image_size=224)
    else:
        base = ViT(
            patch_size=(14, 14),
            width=384,
            depth=12,
            mlp_dim=1536,
            num_heads=6,
            class_token=True,
            layer_scale=1.0,
            pool_type="tok",
        )
        variables = jax.jit(base.init)(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(pairs, 224, 224, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(pairs, 224, 224, 3)), jnp.float32)
    both = jnp.concatenate([a, b])
    embed = jax.jit(lambda v, x: base.apply(v, x)[0])
    fns = {"forward": lambda: embed(variables, both)}
    for pool in ("tok", "gap"):
        model = base.clone(pool_type=pool)
        fns[pool] = lambda m=model: ex.paired_maps(m, variables, a, b, upsampled=False)
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_time(fn))
    out = {k: statistics.median(v) for k, v in times.items()}
    for pool in ("tok", "gap"):
        out[f"{pool}/forward"] = statistics.median(
            t / f for t, f in zip(times[pool], times["forward"], strict=True)
        )
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", default="B/16")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--images", type=int, default=1000, help="cross_maps over all pairs")
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--forward-images", type=int, default=12, help="images of (c)")
    p.add_argument("--only-forward", action="store_true", help="run (c) alone")
    p.add_argument("--only-dinov2", action="store_true", help="run (d) alone")
    p.add_argument("--dinov2", help="a real DINOv2 file or folder for (d) (default: random)")
    p.add_argument("--dinov2-pairs", type=int, default=4)
    args = p.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax {jax.__version__}")
    if args.only_dinov2:
        _print_dinov2(bench_dinov2(args.dinov2, args.dinov2_pairs, args.repeats), args)
        return

    model = ViT(
        **decode_variant(args.variant),
        class_token=True,
        keep_class_token=False,
        proj_dim=512,
        dtype=jnp.dtype(args.dtype),
    )
    x = jnp.zeros((1, args.size, args.size, 3))
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(args.pairs, args.size, args.size, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(args.pairs, args.size, args.size, 3)), jnp.float32)

    print(f"model: ViT-{args.variant} at {args.size} px, proj 512, dtype {args.dtype}")
    n = args.forward_images
    x = jnp.asarray(rng.normal(size=(n, args.size, args.size, 3)), jnp.float32)
    f = bench_forward(model, variables, x, args.repeats)
    print(
        f"(c) {n} images, embedding only: model.apply {f['apply'] * 1e3:.0f} ms, "
        f"features {f['features'] * 1e3:.0f} ms, embed "
        f"{f['embed'] * 1e3:.0f} ms (medians of {args.repeats}, interleaved)"
    )
    print(
        f"    model.apply / features {f['apply/features']:.3f}x, model.apply / "
        f"embed {f['apply/embed']:.3f}x (median of per-round ratios)"
    )
    print(
        "    attention blocks computed as one fused q k^T -> softmax -> @ v kernel: "
        f"model.apply {f['fused_kernels']['apply']}, embed "
        f"{f['fused_kernels']['embed']}"
    )
    core = bench_attention_core(
        n,
        model.grid((args.size, args.size, 3))[0] ** 2,
        model.num_heads,
        model.width // model.num_heads,
        3 * args.repeats,
    )
    print(
        f"    one block's attention core: fused {core['fused_s'] * 1e3:.1f} ms, softmax "
        f"written out {core['apart_s'] * 1e3:.1f} ms: {core['ratio']:.2f}x"
    )
    if args.only_forward:
        return
    r = bench_pairs(model, variables, a, b, args.repeats)
    print(
        f"(a) {args.pairs} pairs: embedding-only forward {r['embed_s'] * 1e3:.1f} ms, "
        f"paired_maps {r['explain_s'] * 1e3:.1f} ms  (median of {args.repeats}, interleaved)"
    )
    print(f"    explanation overhead: {r['explain_s'] / r['embed_s']:.3f}x the forward")

    c = bench_cross(model, args.size, args.images, args.chunk)
    total = c["fold_s"] + c["cross_s"]
    forwards = r["per_image_forward_s"] * args.images
    print(
        f"(b) cross_maps {args.images} x {args.images} = {c['pairs']:,} pairs: "
        f"fold {c['fold_s']:.2f} s + maps {c['cross_s']:.2f} s = {total:.2f} s, "
        f"{c['pairs'] / total:,.0f} pairs/s"
    )
    print(
        f"    vs the {args.images} forwards before it "
        f"({r['per_image_forward_s'] * 1e3:.1f} ms/image measured in (a)): "
        f"{total / forwards:.3f}x"
    )
    _print_dinov2(bench_dinov2(args.dinov2, args.dinov2_pairs, args.repeats), args)


def _print_dinov2(d: dict[str, float], args) -> None:
    n = args.dinov2_pairs
    print(
        f"(d) DINOv2-S/14 at 224 px, {n} pairs: forward of {2 * n} images "
        f"{d['forward'] * 1e3:.0f} ms ({d['forward'] / (2 * n) * 1e3:.0f} ms/image); "
        f"paired_maps tok {d['tok'] * 1e3:.0f} ms ({d['tok/forward']:.3f}x), "
        f"gap {d['gap'] * 1e3:.0f} ms ({d['gap/forward']:.3f}x)  (medians, interleaved)"
    )


if __name__ == "__main__":
    main()
