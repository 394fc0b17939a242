"""Every explanation method: what its map conserves, and what it costs.

(a) Cost of one pair: ``explain.paired_maps(method=...)`` on one pair / the embedding
    forward of the same two images. Both compiled; timed interleaved (every method, then
    again), medians and their ratio.
(b) Cost of 10^4 cross pairs (Q = G = 100): the 200 forwards, plus for the paper's method
    the fold and one [N, E] x [E] product per pair (``explain.cross_maps``), for the other
    methods one backward pass per (image, partner) (``explain.cross_maps``). With
    ``--cross-direct`` the whole 100 x 100 block is timed; otherwise (ViT-S/14: hours on
    two cores) the time per partner is the slope between K = 2 and K = 6 partners of
    ``explain.against`` on B images, and 10^4 pairs cost
    ``forward(200 images) + 2 * 10^4 * slope / B`` (both directions): said as extrapolated.
    Ratio: that over the 200 forwards.
(c) Conservation, on real pairs of ``--data``: the map's sum against the cosine
    (mean of sum / cosine, mean |sum - cosine|, their correlation), and each method's
    total over every token it credits (class tokens too), e.g. the conservative method's
    total + bias terms = cosine; for ``ig`` the completeness gap total - (cosine -
    f(baseline)).
(d), (e) With ``--torch`` (needs torch and captum; DINOv2 layout): the project against plain
    PyTorch on the same weights and threads, one pair and a 10 x 10 cross block, every map
    compared (``benchmarks/_torch_compare.py``); without torch, one line says so and the
    rest runs.

Costs do not depend on the weights, so ``--model vit-s14`` is a randomly initialised
DINOv2-S/14 (224 px, class token, layer scale); (c) needs trained weights.

Run:  python benchmarks/methods.py --model demo:workdirs/demo --data demo --cross-direct
      python benchmarks/methods.py --model vit-s14 --skip-conservation
      python benchmarks/methods.py --model dinov2.npz --data photos --skip-cost
      python benchmarks/methods.py --model FOLDER --torch --skip-cost --skip-conservation
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import evaluate, explain
from pairviz_jax.models import ViT, decode_variant

METHODS = ("paper", "gradxinput", "chefer", "conservative", "ig")


def _time(fn, *args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def _model(spec: str):
    if spec == "vit-s14":
        model = ViT(**decode_variant("S/14"), class_token=True, layer_scale=1.0, pool_type="tok")
        x = jnp.zeros((1, 224, 224, 3))
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
        return model, variables, (224, 224), "random ViT-S/14 (DINOv2 layout), 224 px", None
    sys.path.insert(0, "benchmarks")
    import _models

    m = _models.load(spec)
    norm = None if m.mean is None else (m.mean, m.std)
    return m.model, m.variables, m.image_size, m.label, norm


def _threads(n: int, with_torch: bool) -> str:
    """Both sides on n cores: the process is pinned to n CPUs (XLA's and Eigen's pools
    size themselves from the CPUs it may use) and torch gets n threads."""
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > n:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    if with_torch and importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpus} CPUs, load {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""


def cost_one_pair(model, variables, size, options, repeats) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(1, *size, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(1, *size, 3)), jnp.float32)
    both = jnp.concatenate([a, b])
    embed = jax.jit(lambda v, x: model.apply(v, x)[0])
    fns = {"embed": lambda: embed(variables, both)}
    for m in METHODS:
        opts = options.get(m, {})
        fns[m] = lambda m=m, opts=opts: explain.paired_maps(
            model, variables, a, b, method=m, upsampled=False, **opts
        )
    for f in fns.values():
        _time(f)  # compile
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_time(f))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"seconds": med[k], "x_forward": med[k] / med["embed"]} for k in fns}


def cost_cross(model, variables, size, options, repeats, direct, q=100, b_img=4, skip=()):
    rng = np.random.default_rng(1)
    n = 2 * q
    x = jnp.asarray(rng.normal(size=(n, *size, 3)), jnp.float32)
    xq, xg = x[:q], x[q:]
    embed = jax.jit(lambda v, x: model.apply(v, x)[0])
    chunk = 8 if size[0] >= 128 else 64

    def forwards():
        return [embed(variables, x[s : s + chunk]) for s in range(0, n, chunk)]

    def paper():
        fq = explain.features(model, variables, xq)
        fg = explain.features(model, variables, xg)
        return explain.cross_maps(fq, fg)["maps_q"]

    _time(forwards)
    t_fwd = statistics.median(_time(forwards) for _ in range(repeats))
    _time(paper)
    out = {
        "forward_200_s": t_fwd,
        "paper": {"seconds": statistics.median(_time(paper) for _ in range(repeats))},
    }
    out["paper"]["x_forward"] = out["paper"]["seconds"] / t_fwd
    for m in METHODS[1:]:
        if m in skip:
            continue
        opts = options.get(m, {})
        if direct:

            def run(m=m, opts=opts):
                return explain.cross_maps(
                    explain.Inputs(model, variables, xq),
                    explain.Inputs(model, variables, xg),
                    method=m,
                    **opts,
                )["maps_q"]

            _time(run)
            s = statistics.median(_time(run) for _ in range(max(1, repeats // 2)))
            out[m] = {"seconds": s, "x_forward": s / t_fwd, "how": "measured"}
            continue
        ks = (2, 6)
        img = x[:b_img]
        emb = embed(variables, x[b_img : b_img + max(ks)])  # the partners
        parts = {k: jnp.broadcast_to(emb[:k][None], (b_img, k, emb.shape[-1])) for k in ks}
        fns = {
            k: (
                lambda p=p, m=m, opts=opts, img=img: explain.against(
                    model, variables, img, p, method=m, **opts
                )["maps"]
            )
            for k, p in parts.items()
        }
        for f in fns.values():
            _time(f)
        t = {k: statistics.median(_time(f) for _ in range(repeats)) for k, f in fns.items()}
        per_partner = (t[6] - t[2]) / 4 / b_img  # one backward pass of one image
        s = t_fwd + 2 * q * q * per_partner
        out[m] = {
            "seconds": s,
            "x_forward": s / t_fwd,
            "how": f"extrapolated: {per_partner:.4f} s per (image, partner)",
        }
    return out


def conservation(model, variables, data, options, batch=8) -> dict[str, dict]:
    x, partners = data["images"], data["partners"][:, 0]
    emb_p = np.asarray(explain.embed(model, variables, jnp.asarray(partners)))
    out = {}
    for m in METHODS:
        sums, totals, scores = [], [], []
        for s in range(0, len(x), batch):
            r = explain.against(
                model,
                variables,
                jnp.asarray(x[s : s + batch]),
                jnp.asarray(emb_p[s : s + batch]),
                method=m,
                **options.get(m, {}),
            )
            sums.append(np.asarray(r["maps"]).sum((-2, -1)))
            totals.append(np.asarray(r["total"]))
            scores.append(np.asarray(r["score"]))
        sums, totals, scores = map(np.concatenate, (sums, totals, scores))
        out[m] = {
            "sum_over_cosine": float(np.mean(sums / scores)),
            "mean_abs_sum_minus_cosine": float(np.mean(np.abs(sums - scores))),
            "corr_sum_cosine": float(np.corrcoef(sums, scores)[0, 1]),
            "mean_abs_total_minus_cosine": float(np.mean(np.abs(totals - scores))),
            "mean_cosine": float(scores.mean()),
        }
        if m == "ig":  # completeness: total = cosine - f(baseline)
            emb0 = np.asarray(explain.embed(model, variables, jnp.zeros_like(jnp.asarray(x[:1]))))[
                0
            ]
            emb_x = np.asarray(explain.embed(model, variables, jnp.asarray(x)))
            u = emb_p / np.linalg.norm(emb_p, axis=1, keepdims=True)
            f0 = (emb0[None] * u).sum(1) / np.linalg.norm(emb_x, axis=1)
            out[m]["mean_abs_completeness_gap"] = float(np.mean(np.abs(totals - (scores - f0))))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit-s14", help="vit-s14 | demo:WORKDIR | weights file")
    p.add_argument("--data", choices=("demo", "photos"), help="pairs for (c)")
    p.add_argument("--pairs", type=int, default=32, help="pairs for (c)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cross-direct", action="store_true", help="time all 10^4 pairs in (b)")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument(
        "--cross-skip",
        action="append",
        default=[],
        help="methods left out of (b), e.g. ig (on ViT-S/14: an hour on two cores)",
    )
    p.add_argument("--skip-conservation", action="store_true")
    p.add_argument("--option", action="append", default=[], help="METHOD.KEY=VALUE")
    p.add_argument("--torch", action="store_true", help="(d, e): against PyTorch when installed")
    p.add_argument("--cross-n", type=int, default=10, help="Q = G of the cross block in (e)")
    p.add_argument(
        "--threads", type=int, help="CPUs to run on (0: all; default: 2 with --torch, else all)"
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    from pairviz_jax.evaluate import commands

    options = commands.parse_options(args.option)
    threads = (2 if args.torch else 0) if args.threads is None else args.threads
    where = _threads(threads, args.torch) if threads else ""
    model, variables, size, label, norm = _model(args.model)
    result = {"model": label, "device": str(jax.devices()[0]), "options": options}
    print(f"{label} on {result['device']} ({where})", flush=True)
    if not args.skip_cost:
        result["one_pair"] = cost_one_pair(model, variables, size, options, args.repeats)
        print("one pair (x the embedding forward of its two images):", flush=True)
        for k, v in result["one_pair"].items():
            print(f"  {k:13s} {v['seconds'] * 1e3:9.1f} ms  {v['x_forward']:8.2f} x", flush=True)
        result["cross"] = cost_cross(
            model, variables, size, options, args.repeats, args.cross_direct, skip=args.cross_skip
        )
        print(
            f"10^4 cross pairs (100 x 100); 200 forwards: {result['cross']['forward_200_s']:.2f} s"
        )
        for k in (k for k in METHODS if k in result["cross"]):
            v = result["cross"][k]
            how = v.get("how", "measured")
            print(f"  {k:13s} {v['seconds']:10.2f} s  {v['x_forward']:9.1f} x  ({how})", flush=True)
    if not args.skip_conservation and args.data:
        if args.data == "demo":
            d = evaluate.demo_pairs(args.pairs, image_size=size[0])
            data = {"images": d["images_a"], "partners": d["images_b"][:, None]}
        else:
            sys.path.insert(0, "benchmarks")
            import _models

            m = _models.load(args.model)
            norm = None if m.mean is None else (m.mean, m.std)
            data = evaluate.photo_pairs(
                args.pairs, split="a", image_size=size[0], normalization=norm
            )
        result["conservation"] = conservation(model, variables, data, options)
        print("conservation (map sum vs cosine; total: every token the method credits):")
        for k, v in result["conservation"].items():
            print(f"  {k:13s} " + ", ".join(f"{n} {x:.4f}" for n, x in v.items()), flush=True)
    if args.torch:
        missing = [m for m in ("torch", "captum") if importlib.util.find_spec(m) is None]
        sys.path.insert(0, "benchmarks")
        import _torch_compare

        why = _torch_compare.supported(model)
        if missing or why:
            why = " and ".join(missing) + " not installed" if missing else why
            print(f"PyTorch comparison skipped: {why}")
        else:
            result["torch"] = _torch_compare.compare(
                model, variables, size, norm, args.repeats, args.cross_n
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
