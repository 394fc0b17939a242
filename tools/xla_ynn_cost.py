"""What turning XLA:CPU's YNNPACK fusions off costs, on a random DINOv2-S/14 at 224 px.

The library turns the YNNPACK *reduce* fusions off (``pairviz_jax._xla``; they miscompile
batched maps, ``tools/xla_ynn_repro.py``). This times three settings of
``xla_cpu_experimental_ynn_fusion_type`` in one process, through ``jax.jit``'s
per-function ``compiler_options`` (so the process's own XLA_FLAGS do not matter):

* ``default``  - XLA's default list in jaxlib 0.10 (individual dot, individual
  convolution, reduce);
* ``-reduce``  - the library's setting (individual dot and convolution kept);
* ``none``     - every YNNPACK fusion off.

Timed: the embedding forward of ``--images`` images, and ``explain.methods.against`` of
``--images`` images x ``--partners`` partners for gradxinput and chefer (the maps of the
``default`` setting are wrong there; its time is still the cost to compare). Every
function is compiled first, then the settings are timed interleaved ``--repeats`` times;
medians and their ratio to ``default`` are printed (and written as JSON with ``--out``).

Run:  python3 tools/xla_ynn_cost.py --depth 12 --repeats 5
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp

from pairviz_jax.explain.methods import api
from pairviz_jax.models import ViT, decode_variant

OPTION = "xla_cpu_experimental_ynn_fusion_type"
_T = "LIBRARY_FUSION_TYPE_"
# A compiler option replaces the flag's list (tested), whatever XLA_FLAGS says.
SETTINGS = {
    "default": f"{_T}INDIVIDUAL_DOT,{_T}INDIVIDUAL_CONVOLUTION,{_T}REDUCE",
    "-reduce": f"{_T}INDIVIDUAL_DOT,{_T}INDIVIDUAL_CONVOLUTION",
    "none": "",
}


def _jit(fn, setting):
    return jax.jit(fn, compiler_options={OPTION: SETTINGS[setting]})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--partners", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default="gradxinput,chefer")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    kw = {**decode_variant("S/14"), "depth": a.depth}
    model = ViT(**kw, class_token=True, layer_scale=1.0, pool_type="tok")
    x = jax.random.normal(jax.random.PRNGKey(0), (a.images, 224, 224, 3))
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), x[:1])
    partners = jax.random.normal(jax.random.PRNGKey(2), (a.images, a.partners, kw["width"]))
    tasks = {"forward": (lambda v, x: model.apply(v, x)[0], (variables, x))}
    for m in a.methods.split(","):
        _, opts = api._resolve(m, model, {})
        body = functools.partial(api._against_body, m, opts, model)
        tasks[m] = (body, (variables, x, partners))
    fns = {(t, s): _jit(f, s) for t, (f, _) in tasks.items() for s in SETTINGS}
    for (t, _s), fn in fns.items():  # compile and warm up
        jax.block_until_ready(fn(*tasks[t][1]))
    times = {k: [] for k in fns}
    for _ in range(a.repeats):
        for (t, s), fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*tasks[t][1]))
            times[(t, s)].append(time.perf_counter() - t0)
    out = {}
    print(f"depth {a.depth}, {a.images} images x {a.partners} partners, {a.repeats} repeats")
    for t in tasks:
        base = statistics.median(times[(t, "default")])
        for s in SETTINGS:
            med = statistics.median(times[(t, s)])
            out[f"{t}/{s}"] = dict(median_s=med, ratio=med / base)
            print(f"{t:>11} {s:>8}: median {med:8.3f} s   / default {med / base:5.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    jnp.zeros(())  # the backend starts here, after pairviz_jax's import
    main()
