"""The explore page and the report in headless Chromium, opened from file:// URLs.

The pointer is moved over chosen patches, and the heatmap the page drew is read back
from its canvas: every patch centre's colour is inverted through the colormap and
compared with the correspondence (or maps) computed by the library, so the page must
draw the right row of C over the right image, oriented the right way. Every request the
page makes is read from Chromium's network log: only file: and data: URLs. Also measured
and printed (not asserted): the generation time and first-page load time of a report of
10^5 pairs.

Needs the distribution's ``chromium`` and ``chromium-driver`` (Selenium drives
``/usr/bin/chromedriver``; nothing is downloaded). Skipped only when they are missing.
"""

import base64
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest

from pairviz_jax import batch, explain
from pairviz_jax.viewer import explore, report
from tests import inputs
from tests.test_viewer import (
    SIZE,
    decode,
    embedded_data,
    loaded,
    page_json,
    topk_job,
)

__all__ = ["loaded", "topk_job"]  # fixtures shared with test_viewer.py

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
DRIVER = shutil.which("chromedriver")
GRID = 8  # mu/4 at 32 px
CELL = 33  # odd CSS pixels per patch: a pixel's centre is each patch's centre
DISPLAY = GRID * CELL


@pytest.fixture(scope="module")
def driver():
    if CHROMIUM is None or DRIVER is None:
        inputs.missing("browser tests need headless Chromium: apt install chromium chromium-driver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look anything up
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


def open_page(driver, path, ready="1"):
    driver.get_log("performance")  # drop what earlier tests left
    driver.get_log("browser")
    driver.get("file://" + os.path.abspath(path))
    wait_for(driver, f"return document.body.dataset.ready === {json.dumps(ready)}")


def wait_for(driver, script, timeout=300.0):  # a hang, not a loaded machine
    t0 = time.perf_counter()
    while not driver.execute_script(script):
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.02)


def requested_urls(driver):
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def assert_offline(driver, urls):
    assert urls, "the network log is empty: it would not show requests either"
    bad = [u for u in urls if not u.startswith(("file://", "data:"))]
    assert not bad, bad
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    # And the page's policy refuses requests it did not make itself.
    driver.execute_script(
        "window.__blocked = [];"
        "document.addEventListener('securitypolicyviolation', e => __blocked.push(e.blockedURI));"
        "fetch('https://example.com/x').catch(() => null);"
        "new Image().src = 'http://example.com/y.png';"
    )
    wait_for(driver, "return window.__blocked.length === 2")


def lut_of(data):
    return np.frombuffer(base64.b64decode(data["cmap"]), np.uint8).reshape(256, 3).astype(int)


def sampled_indices(driver, css, lut, grid, nth=0):
    """Colormap index drawn at each patch centre of the nth canvas matching ``css``."""
    rgb = driver.execute_script(
        """
        const [css, nth, gh, gw] = arguments;
        const c = document.querySelectorAll(css)[nth];
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const out = [];
        for (let r = 0; r < gh; r++) for (let q = 0; q < gw; q++) {
          const x = Math.floor((q + 0.5) * c.width / gw), y = Math.floor((r + 0.5) * c.height / gh);
          const o = 4 * (y * c.width + x);
          out.push([px[o], px[o + 1], px[o + 2], px[o + 3]]);
        }
        return out;
        """,
        css,
        nth,
        *grid,
    )
    rgb = np.asarray(rgb)
    assert (rgb[:, 3] == 255).all()
    dist = ((rgb[:, None, :3] - lut[None]) ** 2).sum(-1)
    assert (dist.min(1) == 0).all(), "a drawn colour is not in the colormap"
    return dist.argmin(1)


def expected_indices(values, lo, hi):
    return np.clip(np.rint((np.asarray(values, np.float64) - lo) / (hi - lo) * 255), 0, 255)


# ----------------------------------------------------------------------------- explore


def shuffled_pair(seed=0):
    """A noise image and a copy with its 8 x 8 patches shuffled: B's patch j is A's
    patch perm[j], so A's patch i is B's patch where[i]."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    p = SIZE // GRID
    perm = rng.permutation(GRID * GRID)
    tiles = a.reshape(GRID, p, GRID, p, 3).transpose(0, 2, 1, 3, 4).reshape(-1, p, p, 3)
    b = tiles[perm].reshape(GRID, GRID, p, p, 3).transpose(0, 2, 1, 3, 4).reshape(SIZE, SIZE, 3)
    return a, b, perm, np.argsort(perm)


@pytest.fixture(scope="module")
def explore_page(tmp_path_factory):
    """The page of a shuffled pair under a ViT whose attention stays local (its rollout
    is near the identity), so each row of C peaks where that patch went."""
    from pairviz_jax.data import preprocess
    from pairviz_jax.plotting import Example, LoadedModel
    from tests.test_correspondence import _local_attention_model

    model, variables = _local_attention_model(SIZE)
    loaded = LoadedModel(model, variables, (SIZE, SIZE), *preprocess.NORMALIZATION["demo"], "local")
    a, b, perm, where = shuffled_pair()
    ex_a, ex_b = Example(a, None, "noise", "a"), Example(b, None, "noise, shuffled", "b")
    data = explore.explore_data(loaded, ex_a, ex_b, display=DISPLAY)
    path = explore.write_explore(str(tmp_path_factory.mktemp("explore") / "pair.html"), data)
    f = explain.features(model, variables, loaded.prepare(np.stack([a, b])), head_fusion="mean")
    want = {
        level: jax.device_get(
            explain.correspondence(f.slice(0, 1), f.slice(1, 2), level=level, aligned=True)
        )
        for level in ("patch", "token")
    }
    corr = np.asarray(want["patch"]["corr"][0])
    assert (corr.argmax(1) == where).all() and (corr.argmax(0) == perm).all()  # the premise
    return path, data, want, perm, where


def clear_peaks(corr, k=3):
    """k rows whose peaks are clear (top-2 gap > 10% of the row's range), distinct peaks."""
    s = np.sort(corr, 1)
    margin = (s[:, -1] - s[:, -2]) / (s[:, -1] - s[:, 0])
    chosen, peaks = [], set()
    for i in np.argsort(-margin):
        if margin[i] < 0.1:
            break
        if corr[i].argmax() not in peaks:
            chosen.append(int(i))
            peaks.add(int(corr[i].argmax()))
        if len(chosen) == k:
            break
    assert len(chosen) >= 2, "no two patches with clear, different peaks"
    return chosen


def hover(driver, side, i):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    stage = driver.find_element(By.ID, f"stage-{side}")
    r, c = divmod(i, GRID)
    dx, dy = int((c + 0.5) * CELL) - DISPLAY // 2, int((r + 0.5) * CELL) - DISPLAY // 2
    ActionChains(driver).move_to_element_with_offset(stage, dx, dy).perform()
    wait_for(driver, f"return document.body.dataset.shown === '{side}:{i}'")


def test_explore_hover_draws_each_patchs_row_of_c_with_its_peak(driver, explore_page):
    path, data, want, perm, where = explore_page
    lut = lut_of(data)
    open_page(driver, path)
    page_corr = decode(data["levels"]["patch"]["corr"])  # what the page holds
    corr = np.asarray(want["patch"]["corr"][0])  # computed by the library, float32
    for side in (0, 1):
        rows = corr if side == 0 else corr.T
        page_rows = page_corr if side == 0 else page_corr.T
        peaks = []
        for i in clear_peaks(rows):
            hover(driver, side, i)
            drawn = sampled_indices(driver, f"#heat-{1 - side}", lut, (GRID, GRID))
            assert drawn.argmax() == rows[i].argmax()  # the peak is where C peaks,
            assert drawn.argmax() == (where if side == 0 else perm)[i]  # where the patch went
            lo, hi = page_rows[i].min(), page_rows[i].max()
            assert np.abs(drawn - expected_indices(page_rows[i], lo, hi)).max() <= 1
            peaks.append(drawn.argmax())
            # The hovered image itself shows no heatmap, only the patch's outline.
            assert driver.execute_script(
                "const c = document.getElementById(arguments[0]);"
                "return c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                ".every(v => v === 0)",
                f"heat-{side}",
            )
        assert len(set(peaks)) == len(peaks) >= 2  # the peak moved
    info = driver.find_element("id", "info").text
    assert info.startswith("B (row") and "= B's paired map there" in info


def test_explore_toggles_levels_scales_and_paired_maps(driver, explore_page):
    from selenium.webdriver.common.by import By

    path, data, want, _, _ = explore_page
    lut = lut_of(data)
    open_page(driver, path)
    token = np.asarray(want["token"]["corr"][0])
    driver.find_element(By.CSS_SELECTOR, 'input[name="level"][value="token"]').click()
    i = clear_peaks(token)[0]
    hover(driver, 0, i)
    drawn = sampled_indices(driver, "#heat-1", lut, (GRID, GRID))
    assert drawn.argmax() == token[i].argmax()
    # One scale for the whole matrix: the row's own colours get darker, the legend says so.
    driver.find_element(By.CSS_SELECTOR, 'input[name="scale"][value="matrix"]').click()
    page_p = decode(data["levels"]["token"]["corr"])
    whole = sampled_indices(driver, "#heat-1", lut, (GRID, GRID))
    expect = expected_indices(page_p[i], page_p.min(), page_p.max())
    assert np.abs(whole - expect).max() <= 1
    assert "scale: all pairs" in driver.find_element(By.ID, "what").text
    # The paired maps of both images, on one scale.
    driver.find_element(By.CSS_SELECTOR, 'input[name="level"][value="patch"]').click()
    driver.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="maps"]').click()
    wait_for(driver, "return document.body.dataset.shown === 'maps'")
    maps = [np.ravel(want["patch"][k][0]) for k in ("map_a", "map_b")]
    page_maps = [decode(data["levels"]["patch"][k]) for k in ("map_a", "map_b")]
    lo = min(m.min() for m in page_maps)
    hi = max(m.max() for m in page_maps)
    for side in (0, 1):
        drawn = sampled_indices(driver, f"#heat-{side}", lut, (GRID, GRID))
        assert drawn.argmax() == maps[side].argmax()
        assert np.abs(drawn - expected_indices(page_maps[side], lo, hi)).max() <= 1
    text = driver.find_element(By.ID, "info").text
    assert f"the cosine is {data['score']:.3g}" in text


def test_explore_tap_pins_and_keys_move(driver, explore_page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, data, want, _, _ = explore_page
    lut = lut_of(data)
    corr = np.asarray(want["patch"]["corr"][0])
    open_page(driver, path)
    stage = driver.find_element(By.ID, "stage-1")
    rect = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", stage
    )
    j = 2 * GRID + 5  # B's patch (2, 5), tapped with a finger
    finger = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
    x, y = int(rect[0] + 5.5 * CELL), int(rect[1] + 2.5 * CELL)
    finger.pointer_action.move_to_location(x, y).pointer_down().pointer_up()
    finger.perform()
    wait_for(driver, f"return document.body.dataset.shown === '1:{j}'")
    assert driver.execute_script("return PV.state.pinned")
    assert sampled_indices(driver, "#heat-0", lut, (GRID, GRID)).argmax() == corr[:, j].argmax()
    # Pinned: moving the mouse over A changes nothing.
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "stage-0")).perform()
    assert driver.execute_script("return document.body.dataset.shown") == f"1:{j}"
    # Arrow keys move the pinned patch: right, then down.
    stage.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_DOWN)
    k = 3 * GRID + 6
    wait_for(driver, f"return document.body.dataset.shown === '1:{k}'")
    assert sampled_indices(driver, "#heat-0", lut, (GRID, GRID)).argmax() == corr[:, k].argmax()
    stage.send_keys(Keys.ESCAPE)
    wait_for(driver, "return document.body.dataset.shown === 'none'")


def test_explore_works_from_file_and_fetches_nothing(driver, explore_page):
    path = explore_page[0]
    open_page(driver, path)
    hover(driver, 0, 9)
    urls = requested_urls(driver)
    assert urls[0] == "file://" + os.path.abspath(path)
    assert_offline(driver, urls)
    assert driver.execute_script("return location.protocol") == "file:"


# ----------------------------------------------------------------------------- report


THUMB = 88  # 11 pixels per patch: odd, so a pixel's centre is each patch's centre


def card_check(driver, res, lut, n_cards):
    """Both maps of the first n cards, drawn per pair on one scale, as the job holds them."""
    cards = driver.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(c => +c.dataset.record)"
    )
    assert cards
    for k, rec in enumerate(cards[:n_cards]):
        got = res.get(rec)
        map_a = got["maps_a"].astype(np.float32).ravel()
        map_b = got["maps_b"].astype(np.float32).ravel()
        lo, hi = min(map_a.min(), map_b.min()), max(map_a.max(), map_b.max())
        # query order: the result (B, with B's map) on top, the query (A) below.
        top = sampled_indices(driver, ".card canvas.heat", lut, (GRID, GRID), nth=2 * k)
        bottom = sampled_indices(driver, ".card canvas.heat", lut, (GRID, GRID), nth=2 * k + 1)
        assert np.abs(top - expected_indices(map_b, lo, hi)).max() <= 1
        assert np.abs(bottom - expected_indices(map_a, lo, hi)).max() <= 1
        # Each map's peak is drawn brightest (ties within one colour step aside).
        assert top[map_b.argmax()] == top.max() and bottom[map_a.argmax()] == bottom.max()
    return cards


def test_report_draws_the_jobs_maps_and_pages_through_them(driver, topk_job, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    dest = str(tmp_path / "report")
    index = report.write_report(topk_job, dest, per_page=16, thumb=THUMB)
    res = batch.BatchResults(topk_job)
    meta = embedded_data(open(index, encoding="utf-8").read())
    lut = lut_of(meta)
    open_page(driver, index, ready="0")
    urls = requested_urls(driver)
    cards = card_check(driver, res, lut, 14)
    assert len(cards) == 14 and len(driver.find_elements(By.CSS_SELECTOR, ".query")) == 2
    pages = [
        page_json(open(os.path.join(dest, report.page_path(p))).read())[1]
        for p in range(meta["pages"])
    ]
    assert cards == [r[0] for r in pages[0]["rows"]]
    # Only the first page's script was read (and the next, prefetched), and thumbnails.
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts[0] == "file://" + os.path.join(dest, report.page_path(0))
    assert set(scripts[1:]) <= {"file://" + os.path.join(dest, report.page_path(1))}
    assert_offline(driver, urls)
    # Next page: its pairs, drawn the same way.
    driver.find_element(By.ID, "next").click()
    wait_for(driver, "return document.body.dataset.ready === '1'")
    assert card_check(driver, res, lut, 3) == [r[0] for r in pages[1]["rows"]]
    # A page by its address, and a query by (part of) its name.
    driver.get("file://" + index + "#p=12")
    wait_for(driver, "return document.body.dataset.ready === '11'")
    target = pages[17]["rows"][0]
    name = pages[17]["names"][str(target[1])]
    box = driver.find_element(By.ID, "search")
    box.send_keys(name, Keys.ENTER)
    wait_for(driver, "return document.body.dataset.ready === '17'")
    assert driver.find_element(By.ID, "page").get_attribute("value") == "18"
    assert driver.execute_script("return location.hash") == "#p=18"
    assert card_check(driver, res, lut, 1) == [r[0] for r in pages[17]["rows"]]


@pytest.mark.slow
def test_report_of_1e5_pairs_is_quick_to_write_and_to_open(driver, loaded, tmp_path, capsys):
    out = str(tmp_path / "job")
    t0 = time.perf_counter()
    batch.run_batch(
        loaded.model,
        loaded.variables,
        batch.ImageLoader(SIZE, "demo"),
        out,
        images=batch.image_keys("demo:test"),  # 768 images
        top_k=131,  # 100,608 pairs
        shard_size=65536,
        progress=False,
    )
    t_job = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = report.write_report(out)
    t_report = time.perf_counter() - t0
    meta = embedded_data(open(index, encoding="utf-8").read())
    assert meta["pairs"] == 768 * 131
    loads = []
    for _ in range(3):
        open_page(driver, index, ready="0")
        loads.append(driver.execute_script("return PV_TIMING"))
    drawn = ", ".join(f"{t['rendered']:.0f}" for t in loads)
    shown = ", ".join(f"{t['images']:.0f}" for t in loads)
    with capsys.disabled():
        print(
            f"\n[report 10^5] {meta['pairs']:,} pairs, {meta['pages']:,} pages: batch job "
            f"{t_job:.1f} s, report written in {t_report:.1f} s; first page drawn after "
            f"{drawn} ms, with its images {shown} ms (from navigation start)"
        )
    assert os.path.getsize(index) < 100_000  # the page itself does not grow with the job


def hover_card(driver, k, which, i):
    """Moves the pointer onto patch i of stage ``which`` (0: top, 1: bottom) of card k."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    stage = driver.find_elements(By.CSS_SELECTOR, f'.card[data-k="{k}"] .stage')[which]
    r, c = divmod(i, GRID)
    cell = THUMB // GRID
    dx, dy = int((c + 0.5) * cell) - THUMB // 2, int((r + 0.5) * cell) - THUMB // 2
    ActionChains(driver).move_to_element_with_offset(stage, dx, dy).perform()


def test_report_hover_draws_the_methods_c_and_moves_the_match(driver, loaded, topk_job, tmp_path):
    from tests.test_viewer import _c_of

    dest = str(tmp_path / "report_c")
    index = report.write_report(topk_job, dest, per_page=16, thumb=THUMB, method="bilrp",
                                loaded=loaded, matches=7)  # fmt: skip
    meta = embedded_data(open(index, encoding="utf-8").read())
    lut = lut_of(meta)
    open_page(driver, index, ready="0")
    text = driver.find_element("id", "cinfo").text
    assert "BiLRP" in text and "Eberle et al., TPAMI 2020" in text and "bilrp" in text
    body = page_json(open(os.path.join(dest, report.page_path(0))).read())[1]
    corr, _, cs, _ = _c_of(body)
    for k in (0, 3):
        c = corr[k]
        # query order: the result (B) on top (stage 0), the query (A) below (stage 1).
        for side, stage, rows in ((0, 1, c), (1, 0, c.T)):
            peaks = []
            for i in clear_peaks(rows):
                hover_card(driver, k, stage, i)
                best = int(rows[i].argmax())
                wait_for(driver, f"return document.body.dataset.match === '{k}:{side}:{i}:{best}'")
                other = 2 * k + (0 if side == 0 else 1)  # the partner's canvas (B: top)
                drawn = sampled_indices(driver, ".card canvas.heat", lut, (GRID, GRID), nth=other)
                assert drawn.argmax() == best  # drawn brightest where C's row peaks
                lo, hi = rows[i].min(), rows[i].max()
                assert np.abs(drawn - expected_indices(rows[i], lo, hi)).max() <= 1
                peaks.append(best)
            assert len(set(peaks)) == len(peaks) >= 2  # the match moved with the pointer
    status = driver.find_element("id", "status").text
    assert "matches the query's" in status and "the result's map there" in status
    # Leaving the card draws its two maps again: the maps of C (its marginals).
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(driver.find_element("tag name", "h1")).perform()
    wait_for(driver, "return document.body.dataset.match === ''")
    maps = decode(body["maps"])[3]
    lo, hi = maps.min(), maps.max()
    top = sampled_indices(driver, ".card canvas.heat", lut, (GRID, GRID), nth=6)
    bottom = sampled_indices(driver, ".card canvas.heat", lut, (GRID, GRID), nth=7)
    assert np.abs(top - expected_indices(maps[1], lo, hi)).max() <= 1
    assert np.abs(bottom - expected_indices(maps[0], lo, hi)).max() <= 1
