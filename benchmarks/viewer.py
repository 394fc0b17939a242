"""The viewer's costs: the explore page for ViT-B/16, and batch reports of 10^5 and 10^6 pairs.

(a) ``visualize.py explore`` with the paper's model (ViT-B/16 at 256 px, class token
    dropped, 512-d projection; random weights: sizes and times do not depend on them) on
    two photos scikit-image ships (noise images without it): the HTML file's size, split
    into images, C + P and the rest, and the time to compute and write it.
(b) ``visualize.py report`` on batch jobs of a tiny random ViT (mu/4) over demo images
    (the report's cost depends on the number of pairs, pages and the token grid, not on
    the model): 10^5 pairs with an 8 x 8 grid (32 px) and with ViT-B/16's 16 x 16 grid
    (64 px), and 10^6 pairs (8 x 8). Report generation (median of interleaved rounds, each
    into a fresh folder) and, in headless Chromium, the first page's load: drawn, and with
    its thumbnails (median of rounds; ms from navigation start). Folder sizes on disk.

Run:  python benchmarks/viewer.py                 # everything (~3 min on 2 cores)
      python benchmarks/viewer.py --no-browser    # without Chromium
      python benchmarks/viewer.py --skip-explore --sizes 1e5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _photos(size):
    try:
        from skimage import data

        pics = [data.astronaut(), data.coffee()]
    except ImportError:
        rng = np.random.default_rng(0)
        pics = [rng.integers(0, 256, (400, 600, 3), dtype=np.uint8) for _ in range(2)]
    from pairviz_jax.data import preprocess

    return pics, [preprocess.eval_resize(p, image_size=size)[0] for p in pics]


def bench_explore(rounds: int) -> None:
    import jax
    import jax.numpy as jnp

    from pairviz_jax.data import preprocess
    from pairviz_jax.models import ViT, decode_variant
    from pairviz_jax.plotting import Example, LoadedModel
    from pairviz_jax.viewer import explore

    model = ViT(**decode_variant("B/16"), class_token=True, keep_class_token=False, proj_dim=512)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3)))
    loaded = LoadedModel(
        model, variables, (256, 256), preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD, "B/16"
    )
    originals, small = _photos(256)
    a, b = (Example(im, None, n, n) for im, n in zip(small, ("astronaut", "coffee"), strict=True))
    print("(a) explore page, ViT-B/16 at 256 px (16 x 16 patches), random weights")
    with tempfile.TemporaryDirectory() as tmp:
        for display in (448, 256):
            times = []
            for r in range(rounds + 1):  # the first compiles
                t0 = time.perf_counter()
                data = explore.explore_data(
                    loaded, a, b, source_a=originals[0], source_b=originals[1], display=display
                )
                path = explore.write_explore(os.path.join(tmp, "pair.html"), data)
                if r:
                    times.append(time.perf_counter() - t0)
            size = os.path.getsize(path)
            images = sum(len(im["src"]) for im in data["images"])
            matrices = sum(len(lv["corr"]["b64"]) for lv in data["levels"].values())
            rest = size - images - matrices
            print(
                f"    display {display} px: {size / 1e3:,.0f} kB (images {images / 1e3:,.0f} kB, "
                f"C and P {matrices / 1e3:,.0f} kB, the rest {rest / 1e3:,.0f} kB); "
                f"computed and written in {statistics.median(times):.2f} s "
                f"(median of {rounds}, one forward pass of 2 images included)"
            )


def _job(out: str, n: int, size: int) -> dict:
    import jax
    import jax.numpy as jnp

    from pairviz_jax import batch
    from pairviz_jax.models import ViT, decode_variant

    model = ViT(**decode_variant("mu/4"), proj_dim=8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    loader = batch.ImageLoader(size, "demo")
    if n <= 768 * 767:  # top-k of the 768 test images
        images, kw = batch.image_keys("demo:test"), {"top_k": -(-n // 768)}
    else:  # all pairs of enough training images
        k = int((1 + (1 + 8 * n) ** 0.5) / 2) + 1
        images, kw = batch.image_keys(f"demo:train:{k}"), {"all_pairs": True}
    return batch.run_batch(
        model, variables, loader, out, images=images, shard_size=65536, progress=False, **kw
    )


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def _driver():
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def _first_page(driver, index: str) -> dict:
    driver.get("file://" + index)
    t0 = time.perf_counter()
    while driver.execute_script("return document.body.dataset.ready") != "0":
        if time.perf_counter() - t0 > 30:
            raise RuntimeError(f"{index}: the first page did not load")
        time.sleep(0.01)
    return driver.execute_script("return PV_TIMING")


def bench_report(sizes: list[int], rounds: int, browser: bool) -> None:
    from pairviz_jax.viewer import report

    cases = []
    for n in sizes:
        cases.append((n, 32))
        if n <= 10**5:
            cases.append((n, 64))
    print("(b) report of a batch job (tiny random ViT over demo images)")
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {}
        for n, size in cases:
            out = os.path.join(tmp, f"job_{n}_{size}")
            t0 = time.perf_counter()
            summary = _job(out, n, size)
            jobs[n, size] = out
            print(
                f"    job of {summary['pairs']:,} pairs ({size} px, {summary['images']} images) "
                f"built in {time.perf_counter() - t0:.1f} s"
            )
        gen = {c: [] for c in cases}
        for r in range(rounds):
            for c in cases:
                dest = os.path.join(tmp, f"report_{c[0]}_{c[1]}_{r}")
                t0 = time.perf_counter()
                report.write_report(jobs[c], dest)
                gen[c].append(time.perf_counter() - t0)
                if r < rounds - 1:
                    shutil.rmtree(dest)
        loads = {c: [] for c in cases}
        if browser:
            driver = _driver()
            try:
                for _ in range(max(rounds, 5)):
                    for c in cases:
                        dest = os.path.join(tmp, f"report_{c[0]}_{c[1]}_{rounds - 1}")
                        index = os.path.join(dest, "index.html")
                        loads[c].append(_first_page(driver, index))
            finally:
                driver.quit()
        print("    | pairs | token grid | pages | written in | on disk | first page drawn | "
              "with thumbnails |")  # fmt: skip
        print("    |---|---|---|---|---|---|---|")
        for c in cases:
            dest = os.path.join(tmp, f"report_{c[0]}_{c[1]}_{rounds - 1}")
            pages = sum(len(fs) for _, _, fs in os.walk(os.path.join(dest, "data"))) - 1
            grid = c[1] // 4
            with open(os.path.join(dest, "report.json")) as f:
                pairs = json.load(f)["pairs"]
            drawn = statistics.median(t["rendered"] for t in loads[c]) if loads[c] else None
            shown = statistics.median(t["images"] for t in loads[c]) if loads[c] else None
            ms = lambda v: "-" if v is None else f"{v:.0f} ms"  # noqa: E731
            print(
                f"    | {pairs:,} | {grid} x {grid} | {pages:,} | "
                f"{statistics.median(gen[c]):.1f} s | {_du(dest) / 1e6:,.0f} MB | {ms(drawn)} | "
                f"{ms(shown)} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1e5,1e6", help="numbers of pairs, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--skip-explore", action="store_true")
    args = p.parse_args()
    if not args.skip_explore:
        bench_explore(args.rounds)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    if sizes:
        bench_report(sizes, args.rounds, not args.no_browser)


if __name__ == "__main__":
    main()
