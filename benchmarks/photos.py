"""The real-photo benchmark end to end, timed: what ``visualize.py evaluate --photos`` runs.

``visualize.py evaluate --photos [--distractor] --weights F`` loads F with
``pairviz_jax.checkpoints``; this script takes the models of ``benchmarks/_models.py``
too (``demo:WORKDIR``, or a DINOv2 stand-in ``STEM.npz`` + ``STEM.json``), runs the same
``evaluate.commands.run`` and reports the wall-clock time, the load average and what each
map kind cost.

Run:  python benchmarks/photos.py --model dinov2.npz --distractor --out out/photos.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="demo:WORKDIR | STEM.npz | weights")
    p.add_argument("--distractor", action="store_true")
    p.add_argument("--pairs", type=int, help="per half (default 100)")
    p.add_argument("--steps", type=int)
    p.add_argument("--curve-pairs", type=int)
    p.add_argument("--method", action="append")
    p.add_argument("--option", action="append", default=[])
    p.add_argument("--out", default=os.path.join("out", "photos.png"))
    p.add_argument("--cache", help="resume folder (default beside --out)")
    p.add_argument("--figure", help="also draw every method on two photo pairs")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _models

    from pairviz_jax.evaluate import commands

    loaded = _models.load(args.model)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    load0 = os.getloadavg()
    text, paths = commands.run(
        loaded,
        out=args.out,
        photos=True,
        pairs=args.pairs,
        steps=args.steps,
        distractor=args.distractor,
        methods=args.method,
        options=args.option,
        curve_pairs=args.curve_pairs,
        cache=args.cache,
        figure=args.figure,
    )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(text)
    # On a shared machine the wall clock depends on the others; the CPU time of this process
    # over the cores it can use bounds the wall clock of an idle machine from below.
    cores = os.cpu_count() or 1
    print(
        f"\nwall clock {wall:.0f} s, CPU time {cpu:.0f} s ({cpu / cores:.0f} s over {cores} "
        f"cores); load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}"
    )
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(
            {"wall_s": wall, "cpu_s": cpu, "load_start": load0, "load_end": os.getloadavg()}, f
        )
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
