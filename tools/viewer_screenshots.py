"""Screenshots of the explore page and the batch report for the README (headless Chromium).

Writes three pages with ``visualize.py`` and photographs them:

* ``explore_photo.png``: the stereo pair scikit-image ships (``motorcycle_left.png``,
  ``motorcycle_right.png``: the same scene from two viewpoints), pointer on one patch of A;
* ``explore_demo.png``: two demo test images of one glyph class;
* ``report_demo.png``: the first page of a top-k batch report over demo test images.

The demo pages use ``--workdir`` (the demo run); the photo pair uses ``--photo-weights``
(a real pretrained model's file, with its ``--photo-image-size`` and
``--photo-normalization``) when given, else the same demo run. Nothing is downloaded.

Run:  python tools/viewer_screenshots.py --workdir workdirs/demo --out docs/figures
      python tools/viewer_screenshots.py --workdir workdirs/demo --out docs/figures \\
          --photo-weights dinov2_vits14.safetensors --photo-image-size 224
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WIDTH = 720  # the explore pages; the report is wider
REPORT_WIDTH = 960


def _driver():
    os.environ["SE_OFFLINE"] = "true"  # no Selenium Manager look-ups
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={REPORT_WIDTH},900",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def _wait(driver, script: str, timeout: float = 30.0) -> None:
    t0 = time.perf_counter()
    while not driver.execute_script(script):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"timed out: {script}")
        time.sleep(0.05)


def _small_png(path: str) -> None:
    """Rewrites a screenshot as a 256-colour PNG (the README keeps figures < 300 kB): 192
    colours fitted to the picture plus 64 of the inferno colormap, so the colour bars and
    heatmaps keep their gradients; Floyd-Steinberg dithering."""
    import matplotlib
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    fitted = rgb.quantize(colors=192, method=Image.Quantize.MAXCOVERAGE).getpalette()[: 192 * 3]
    inferno = matplotlib.colormaps["inferno"](np.linspace(0.0, 1.0, 64))[:, :3]
    palette = Image.new("P", (1, 1))
    palette.putpalette(fitted + np.rint(inferno * 255).astype(int).ravel().tolist())
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


def _shoot(driver, path: str, width: int = WIDTH, height: int | None = None) -> None:
    """Screenshot of the page at ``width`` x its content's height (or ``height``) CSS px."""
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(0.2)
    h = height or driver.execute_script("return document.documentElement.scrollHeight")
    metrics["height"] = int(h) + 8
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(0.3)
    driver.save_screenshot(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _small_png(path)
    print(path)


def _visualize(argv: list[str]) -> None:
    import visualize

    if visualize.main([str(a) for a in argv]) != 0:
        raise SystemExit(f"visualize.py {' '.join(map(str, argv))} failed")


def _hover(driver, side: int = 0, patch: tuple[int, int] | None = None) -> None:
    """Points at (and pins) a patch of image ``side``: ``patch`` (row, col), or by default
    the patch of the highest paired-map value (the patch that carries most of the cosine)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    best, gh, gw = driver.execute_script(
        "const m = PV.levels[PV.state.level].maps[arguments[0]]; let b = 0;"
        "for (let k = 1; k < m.length; k++) if (m[k] > m[b]) b = k;"
        "return [b, ...PV.grids[arguments[0]]];",
        side,
    )
    r, c = divmod(best, gw) if patch is None else patch
    stage = driver.find_element(By.ID, f"stage-{side}")
    w, h = stage.size["width"], stage.size["height"]
    dx, dy = int((c + 0.5) * w / gw - w / 2), int((r + 0.5) * h / gh - h / 2)
    ActionChains(driver).move_to_element_with_offset(stage, dx, dy).click().perform()
    _wait(driver, "return PV.state.pinned")


def _same_class_pair(data_dir: str | None) -> tuple[str, str]:
    from pairviz_jax.data import open_source

    source = open_source("demo", "test", data_dir=data_dir)
    first = int(source[0]["label"])
    for i in range(1, len(source)):
        if int(source[i]["label"]) == first:
            return "demo:test:0", f"demo:test:{i}"
    raise RuntimeError("no second image of demo:test:0's class")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the demo run (train.py --config demo)")
    p.add_argument("--out", default=os.path.join("docs", "figures"))
    p.add_argument("--photo-weights", help="a real model's weight file for the photo pair")
    p.add_argument("--photo-image-size", type=int)
    p.add_argument("--photo-normalization", default="imagenet")
    p.add_argument("--photo-patch", help="ROW,COL of image A to point at (default: its best)")
    p.add_argument("--data-dir")
    args = p.parse_args()
    import skimage

    os.makedirs(args.out, exist_ok=True)
    photos = os.path.join(os.path.dirname(skimage.__file__), "data")
    model = ["--workdir", args.workdir]
    with tempfile.TemporaryDirectory() as tmp:
        pages = {}
        # The real-photo pair.
        photo_model = model
        if args.photo_weights:
            photo_model = ["--weights", args.photo_weights]
            photo_model += ["--normalization", args.photo_normalization]
            if args.photo_image_size:
                photo_model += ["--image-size", args.photo_image_size]
        pages["explore_photo"] = os.path.join(tmp, "photo.html")
        left = os.path.join(photos, "motorcycle_left.png")
        right = os.path.join(photos, "motorcycle_right.png")
        _visualize(["explore", left, right, *photo_model, "--out", pages["explore_photo"],
                    "--display", 320])  # fmt: skip
        # A demo pair of one glyph class.
        a, b = _same_class_pair(args.data_dir)
        pages["explore_demo"] = os.path.join(tmp, "demo.html")
        _visualize(["explore", a, b, *model, "--out", pages["explore_demo"], "--display", 320])
        # A top-k report over demo test images.
        job = os.path.join(tmp, "job")
        _visualize(["batch", *model, "--images", "demo:test:120", "--top-k", 6,
                    "--convention", "transpose", "--out", job])  # fmt: skip
        _visualize(["report", job, "--per-page", 18, "--thumb", 96])
        pages["report_demo"] = os.path.join(job, "report", "index.html")

        driver = _driver()
        try:
            photo_patch = None
            if args.photo_patch:
                photo_patch = tuple(int(v) for v in args.photo_patch.split(","))
            for name, patch in (("explore_photo", photo_patch), ("explore_demo", None)):
                driver.get("file://" + pages[name])
                _wait(driver, "return document.body.dataset.ready === '1'")
                _hover(driver, 0, patch)
                _shoot(driver, os.path.join(args.out, f"{name}.png"))
            driver.get("file://" + pages["report_demo"])
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": REPORT_WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            )
            _wait(driver, "return document.body.dataset.ready === '0'")
            bottom = driver.execute_script(
                "const q = document.querySelectorAll('.query');"
                "return q[Math.min(1, q.length - 1)].getBoundingClientRect().bottom + scrollY;"
            )
            _shoot(driver, os.path.join(args.out, "report_demo.png"), REPORT_WIDTH, int(bottom))
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
