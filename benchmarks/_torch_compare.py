"""``benchmarks/methods.py --torch``: the project against plain PyTorch, same weights, same threads.

For DINOv2-layout ViTs (class token, ``tok`` pooling; ``_torch_dinov2.TorchViT``):

(d) one pair: ``explain.paired_maps(method=m)`` against the same maps by hand in torch
    (``_torch_dinov2.pair_maps``) and through Captum (``InputXGradient``,
    ``IntegratedGradients``); gradxinput also against torch with
    ``F.scaled_dot_product_attention`` (no attention weights are read);
(e) a Q x G cross block (10 x 10): ``explain.cross_maps(method=m)`` against
    ``_torch_dinov2.cross_maps`` (each image forward once, one backward pass per partner).

Both sides are compiled / warmed first, then timed interleaved (every method, project and
torch alternating, ``repeats`` rounds), medians; the ratio is project / torch (below 1: the
project is faster). Every map is compared: max |project - torch| / max |torch| per method,
which must be <= 2.4e-5 (float32 error over 12 blocks; ``TOLERANCE``).
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pairviz_jax import explain

TOLERANCE = 2.4e-5
PAIR = {  # project method -> the torch versions it is timed against
    "gradxinput": ("gradxinput", "captum-gradxinput", "sdpa-gradxinput"),
    "chefer": ("chefer",),
    "conservative": ("conservative",),
    "ig": ("captum-ig",),
}
CROSS = ("gradxinput", "chefer", "conservative")


def supported(model) -> str | None:
    """None when the torch reference covers ``model``; else why not (one line)."""
    ok = (
        getattr(model, "has_attention", False)
        and getattr(model, "pool_type", None) == "tok"
        and model.class_token
        and model.keep_class_token
        and not model.distill_token
        and not model.num_registers
        and model.layer_scale is not None
        and model.mlp_act == "gelu"
        and not model.proj_dim
        and not model.ln_pre
    )
    return None if ok else "the torch reference covers the DINOv2 layout only (class token, tok)"


def _images(n: int, size: tuple[int, int], normalization) -> np.ndarray:
    """n images [n, H, W, 3]: the bundled photos, then their mirror images and shifts."""
    from pairviz_jax.data import photos

    names = photos.available()
    base = np.stack([photos.square(photos.load(p), size[0]) for p in names]) / 255.0
    mean, std = normalization or ((0.5,) * 3, (0.5,) * 3)
    base = (base - np.array(mean)) / np.array(std)
    out = [base, base[:, :, ::-1]]
    for s in range(1, n // len(base) + 1):
        out.append(np.roll(base, 14 * s, axis=2))
    return np.concatenate(out)[:n].astype(np.float32)


def _clock(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(): the process's CPU time over all its threads, which a
    loaded machine inflates less than the wall clock (at one thread: the work done)."""
    c, t = time.process_time(), time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t, time.process_time() - c


def _rel(project, torch_maps) -> float:
    p, t = np.asarray(project, np.float64), np.asarray(torch_maps, np.float64)
    return float(np.abs(p - t).max() / np.abs(t).max())


def _race(pairs: dict[str, tuple], repeats: int, check) -> dict[str, dict]:
    """pairs: name -> (project fn, {torch name: fn}); medians of interleaved rounds.

    The first call of each (compiling / warming) goes to ``check(name, torch name,
    project output, torch output) -> max relative difference``.
    """
    times: dict[tuple, list[tuple[float, float]]] = {}
    diffs = {}
    for name, (pf, tfs) in pairs.items():
        out = pf()
        for tn, tf in tfs.items():
            diffs[(name, tn)] = check(name, out, tf())
    for _ in range(repeats):
        for name, (pf, tfs) in pairs.items():
            times.setdefault((name, "project"), []).append(_clock(pf))
            for tn, tf in tfs.items():
                times.setdefault((name, tn), []).append(_clock(tf))
    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    out = {}
    for name, (_, tfs) in pairs.items():
        p = (name, "project")
        out[name] = {"project_s": med[p], "project_cpu_s": cpu[p]}
        for tn in tfs:
            t = (name, tn)
            out[name][tn] = {
                "seconds": med[t],
                "ratio": med[p] / med[t],
                "cpu_s": cpu[t],
                "cpu_ratio": cpu[p] / cpu[t],
                "max_rel_diff": diffs[t],
            }
    return out


def compare(model, variables, size, normalization, repeats: int, cross_n: int = 10) -> dict:
    """(d) and (e) of the module doc; prints as it goes and returns the numbers."""
    import _torch_dinov2 as T
    import torch

    tm = T.TorchViT(jax.device_get(variables["params"]), model.num_heads, model.layer_norm_eps)
    tm_sdpa = T.TorchViT(
        jax.device_get(variables["params"]), model.num_heads, model.layer_norm_eps, "sdpa"
    )
    x = _images(max(2, 2 * cross_n), size, normalization)
    result = {"threads": {"torch": torch.get_num_threads()}, "tolerance": TOLERANCE}
    # (d) one pair
    a, b = jnp.asarray(x[:1]), jnp.asarray(x[1:2])
    xt = torch.from_numpy(x[:2].copy())

    def project(m):
        return lambda: explain.paired_maps(model, variables, a, b, method=m, upsampled=False)

    def torch_fn(tn):
        net = tm_sdpa if tn.startswith("sdpa-") else tm
        return lambda: T.pair_maps(net, xt, tn.removeprefix("sdpa-"))

    pairs = {m: (project(m), {tn: torch_fn(tn) for tn in tns}) for m, tns in PAIR.items()}

    def check_pair(m, r, t):
        return _rel(np.concatenate([np.asarray(r["map_a"]), np.asarray(r["map_b"])]), t.numpy())

    result["one_pair"] = _race(pairs, repeats, check_pair)
    _print("one pair", result["one_pair"])
    # (e) cross block
    if cross_n:
        xq, xg = x[:cross_n], x[cross_n : 2 * cross_n]
        iq = explain.Inputs(model, variables, jnp.asarray(xq))
        ig_ = explain.Inputs(model, variables, jnp.asarray(xg))
        tq, tg = torch.from_numpy(xq.copy()), torch.from_numpy(xg.copy())
        cross = {
            m: (
                lambda m=m: explain.cross_maps(iq, ig_, method=m),
                {m: lambda m=m: T.cross_maps(tm, tq, tg, m)},
            )
            for m in CROSS
        }

        def check_cross(m, r, t):
            return max(_rel(r["maps_q"], t[0].numpy()), _rel(r["maps_g"], t[1].numpy()))

        result["cross"] = _race(cross, max(1, repeats // 2), check_cross)
        _print(f"{cross_n} x {cross_n} cross block", result["cross"])
    return result


def _print(title: str, res: dict) -> None:
    print(
        f"{title}: project / PyTorch, medians (below 1: the project is faster), maps compared; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for m, row in res.items():
        for tn, v in row.items():
            if not isinstance(v, dict):
                continue
            e = v.get("max_rel_diff", float("nan"))
            ok = "equal" if e <= TOLERANCE else "DIFFER"
            ms = row["project_s"] * 1e3, v["seconds"] * 1e3
            print(
                f"  {m:13s} vs {tn:18s} {ms[0]:9.1f} ms / {ms[1]:9.1f}"
                f" ms = {v['ratio']:5.2f} (CPU time {v['cpu_ratio']:5.2f})   max rel diff {e:.1e}"
                f" ({ok})",
                flush=True,
            )
