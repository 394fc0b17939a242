// pairviz report: a batch job's pairs, one page at a time (pages are <script> files).
"use strict";

(() => {
  const T0 = performance.now();
  const M = JSON.parse(document.getElementById("pv-data").textContent);
  const colors = PVC.lut(M.cmap);
  const el = PVC.el;
  const [gh, gw] = M.grid;
  const N = gh * gw;
  const [ih, iw] = M.image_size;
  const thumbW = M.thumb;
  const thumbH = Math.round((M.thumb * ih) / iw);
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  const pad = (k) => String(Math.floor(k / 1000)).padStart(4, "0");
  const pagePath = (p) => `data/${pad(p)}/${p}.js`;
  const thumbPath = (i) => `img/${pad(i)}/${i}.jpg`;
  const timing = (window.PV_TIMING = { start: T0 });

  const state = { page: 0, scale: "pair", show: true, opacity: 0.7, smooth: true, data: null };

  // ------------------------------------------------------------------ page scripts
  const cache = new Map();
  const waiting = new Map();
  window.PV_page = (p, data) => {
    cache.set(p, data);
    while (cache.size > 8) cache.delete(cache.keys().next().value);
    const w = waiting.get(p);
    if (w) {
      waiting.delete(p);
      w.resolve(data);
    }
  };

  function loadScript(src, onerror) {
    const s = el("script", { src });
    s.onload = () => s.remove();
    s.onerror = () => {
      s.remove();
      onerror();
    };
    document.head.append(s);
  }

  function load(p) {
    if (cache.has(p)) return Promise.resolve(cache.get(p));
    if (waiting.has(p)) return waiting.get(p).promise;
    const w = {};
    w.promise = new Promise((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
    });
    waiting.set(p, w);
    loadScript(pagePath(p), () => {
      waiting.delete(p);
      w.reject(new Error(`cannot read ${pagePath(p)} (moved or deleted?)`));
    });
    return w.promise;
  }

  let queries = null;
  function loadQueries() {
    if (queries) return Promise.resolve(queries);
    return new Promise((resolve, reject) => {
      window.PV_queries = (list) => {
        queries = list;
        resolve(list);
      };
      loadScript("data/queries.js", () => reject(new Error("cannot read data/queries.js")));
    });
  }

  // ------------------------------------------------------------------ layout
  const radio = (name, value, text, checked) =>
    el(
      "label",
      {},
      el("input", Object.assign({ type: "radio", name, value }, checked ? { checked: "" } : {})),
      " " + text,
    );
  const what =
    M.mode === "topk"
      ? `each image's ${M.top_k} nearest neighbours`
      : M.mode === "all"
        ? "all pairs"
        : "the pairs of a pairs file";
  const summary =
    `${M.pairs.toLocaleString()} pairs` +
    (M.pairs !== M.pairs_in_job ? ` (of ${M.pairs_in_job.toLocaleString()} in the job)` : "") +
    ` among ${M.images.toLocaleString()} images: ${what}; ` +
    (M.order === "query" ? "grouped by query, best first" : "all pairs, best first");
  const header = el(
    "header",
    {},
    el("h1", { text: M.title }),
    el(
      "p",
      { class: "meta" },
      "model ",
      el("b", { text: M.model || "(unnamed)" }),
      ` · ${M.convention} convention · ${summary}` + (M.finished ? "" : " · job not finished"),
    ),
    el("p", {
      class: "meta",
      id: "cinfo",
      text:
        `What a patch matches: ${M.c_label}, method ${M.method}; ` +
        (M.c_pairs
          ? `C is embedded for the first ${M.c_pairs.toLocaleString()} pairs` +
            (M.c_pairs < M.pairs ? " (report --matches N for more)" : "") +
            "; point at a patch of a card's image. "
          : "no C embedded (report --matches 0). ") +
        (M.maps_of_c
          ? `The maps are this C's marginals (${M.method}), not the job's (${M.job_method}).`
          : `The maps are the job's (${M.job_method}).`),
    }),
  );
  const pageInput = el("input", {
    type: "number",
    id: "page",
    min: "1",
    max: String(M.pages),
    value: "1",
    "aria-label": "page",
  });
  const prev = el("button", { id: "prev", text: "◀ previous" });
  const next = el("button", { id: "next", text: "next ▶" });
  const search = el("input", {
    type: "search",
    id: "search",
    placeholder: "find a query (name contains…)",
  });
  const nav = el(
    "div",
    { class: "nav" },
    prev,
    el("label", {}, "page ", pageInput, ` of ${M.pages.toLocaleString()}`),
    next,
    ...(M.order === "query" ? [search] : []),
  );
  const controls = el(
    "div",
    { class: "controls" },
    el(
      "fieldset",
      {},
      el("legend", { text: "Colour scale" }),
      radio("scale", "pair", "each pair", true),
      radio("scale", "page", "whole page", false),
    ),
    el(
      "fieldset",
      {},
      el("legend", { text: "Drawing" }),
      el("label", {}, el("input", { type: "checkbox", id: "show", checked: "" }), " maps"),
      el(
        "label",
        {},
        " opacity ",
        el("input", { type: "range", id: "opacity", min: "0", max: "100", value: "70" }),
      ),
      el("label", {}, el("input", { type: "checkbox", id: "smooth", checked: "" }), " smooth"),
    ),
  );
  const bar = el("canvas", { id: "bar", width: "256", height: "14" });
  const lo = el("span", { id: "lo", class: "tick" });
  const hi = el("span", { id: "hi", class: "tick" });
  const legendText = el("span", { id: "what" });
  // Fixed heights: text that changes under the pointer must not move the cards.
  const legend = el("div", { class: "legend steady" }, lo, bar, hi, legendText);
  const how = el("p", {
    class: "hint",
    text:
      M.order === "query"
        ? "Each card: a result with its map against the query (top), and the query with " +
          "its map against that result (bottom)."
        : "Each card: image A with its map against B (top), and B with its map against A.",
  });
  if (M.c_pairs)
    how.textContent +=
      " Point at a patch of either image of a card: its row of C is drawn over the other " +
      "image, with a ring on its best match.";
  const status = el("p", { id: "status", class: "status info steady" });
  const content = el("div", { id: "content" });
  document.body.style.setProperty("--thumb", `${thumbW}px`);
  document.body.append(header, nav, controls, legend, how, status, content);
  PVC.drawBar(bar, colors);

  // ------------------------------------------------------------------ drawing
  function short(key) {
    const parts = String(key).split(/[\\/]/);
    return parts.slice(-2).join("/");
  }

  function stage(imageIndex, names, mapCanvas) {
    const img = el("img", {
      src: thumbPath(imageIndex),
      alt: String(names[imageIndex]),
      title: String(names[imageIndex]),
      decoding: "async",
    });
    if (state.show && mapCanvas) img.classList.add("grey");
    const s = el("div", { class: "stage" }, img);
    s.style.height = `${thumbH}px`;
    if (mapCanvas) s.append(mapCanvas);
    return s;
  }

  function heatCanvas() {
    const c = el("canvas", { class: "heat" });
    c.width = Math.round(thumbW * dpr);
    c.height = Math.round(thumbH * dpr);
    c.style.opacity = String(state.opacity);
    c.style.display = state.show ? "" : "none";
    return c;
  }

  // ------------------------------------------------------------------ what a patch matches
  function patchAt(stageEl, ev) {
    const rect = stageEl.getBoundingClientRect();
    const x = (ev.clientX - rect.left) / rect.width;
    const y = (ev.clientY - rect.top) / rect.height;
    if (x < 0 || y < 0 || x >= 1 || y >= 1) return null;
    return Math.floor(y * gh) * gw + Math.floor(x * gw);
  }

  function argmax(values) {
    let best = 0;
    for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
    return best;
  }

  const rc = (i) => `(row ${Math.floor(i / gw)}, col ${i % gw})`;

  function ring(canvas, i) {
    const ctx = canvas.getContext("2d");
    const cw = canvas.width / gw;
    const ch = canvas.height / gh;
    const r = Math.floor(i / gw);
    const c = i % gw;
    PVC.ring(ctx, c * cw, r * ch, cw, ch, Math.max(1.5, canvas.width / 100));
  }

  function box(canvas, i) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const cw = canvas.width / gw;
    const ch = canvas.height / gh;
    ctx.lineWidth = Math.max(1.5, canvas.width / 100);
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect((i % gw) * cw, Math.floor(i / gw) * ch, cw, ch);
  }

  // Row i of pair k's C (side 0: A's patch over B) or column i (side 1: B's patch over A).
  function cRow(C, k, side, i) {
    const base = k * N * N;
    if (side === 0) return C.corr.subarray(base + i * N, base + (i + 1) * N);
    const out = new Float32Array(N);
    for (let j = 0; j < N; j++) out[j] = C.corr[base + j * N + i];
    return out;
  }

  function showMatch(C, card, side, i) {
    const { k, row, canvases } = card;
    const scale = C.scales[k];
    const values = cRow(C, k, side, i).map((v) => v * scale);
    const other = 1 - side;
    const [l, h] = PVC.range(values);
    for (const c of canvases) c.style.display = "";
    PVC.drawMap(canvases[other], values, gh, gw, l, h, colors, state.smooth);
    const best = argmax(values);
    ring(canvases[other], best);
    box(canvases[side], i);
    const rest = C.rests[(k * 2 + side) * N + i] * C.rscales[k];
    let sum = 0;
    for (const v of values) sum += v;
    const names = M.order === "query" ? ["the query", "the result"] : ["A", "B"];
    lo.textContent = PVC.fmt(l);
    hi.textContent = PVC.fmt(h);
    legendText.textContent =
      `C of ${M.method}: ${names[side]}'s patch ${rc(i)} with each patch of ` +
      `${names[other]} (share of the cosine; scale: this patch)`;
    const tiny = Math.abs(rest) <= 1e-6 * Math.abs(row[3]) + 1e-9;
    status.textContent =
      `record ${row[0]}: ${names[side]}'s patch ${rc(i)} matches ${names[other]}'s ` +
      `${rc(best)} best (${PVC.fmt(values[best])}); its row of C sums to ${PVC.fmt(sum)}` +
      (tiny
        ? ` = ${names[side]}'s map there.`
        : `, + ${PVC.fmt(rest)} not on ${names[other]}'s patches = ${PVC.fmt(sum + rest)}, ` +
          `${names[side]}'s map there.`);
    document.body.dataset.match = `${k}:${side}:${i}:${best}`;
  }

  function matchable(C, card, stages) {
    stages.forEach((st, side) => {
      st.classList.add("matchable");
      const show = (ev) => {
        const i = patchAt(st, ev);
        if (i !== null) showMatch(C, card, side, i);
      };
      st.addEventListener("pointermove", show);
      st.addEventListener("pointerdown", show); // a tap on a touch screen
      st.addEventListener("pointerleave", () => {
        card.draw();
        mapLegend();
        document.body.dataset.match = "";
      });
    });
  }

  const mapsOf = M.maps_of_c ? M.method : M.job_method;
  function mapLegend() {
    if (state.scale === "page") {
      lo.textContent = PVC.fmt(state.pageRange[0]);
      hi.textContent = PVC.fmt(state.pageRange[1]);
      legendText.textContent =
        `map value (${mapsOf}: share of the cosine per patch), one scale for the page`;
    } else {
      lo.textContent = "pair's lowest";
      hi.textContent = "highest";
      legendText.textContent =
        `map value (${mapsOf}: share of the cosine per patch); both maps of a pair on one ` +
        "scale (point at a pair for its numbers)";
    }
  }

  function decodeC(data) {
    if (!data.corr) return null;
    return {
      corr: PVC.f16({ b64: data.corr.b64 }),
      scales: data.corr.scales,
      rests: PVC.f16({ b64: data.rests.b64 }),
      rscales: data.rests.scales,
    };
  }

  function render(p, data) {
    state.data = data;
    const maps = PVC.f16(data.maps); // [n, 2, N]
    const C = decodeC(data);
    const pageRange = PVC.range(maps);
    const drawn = [];
    content.replaceChildren();
    const names = data.names;
    const card = (k, row) => {
      const [rec, a, b, score, rank] = row;
      const ca = heatCanvas();
      const cb = heatCanvas();
      const mA = maps.subarray((2 * k) * N, (2 * k + 1) * N);
      const mB = maps.subarray((2 * k + 1) * N, (2 * k + 2) * N);
      drawn.push([ca, mA, mB], [cb, mB, mA]);
      const sa = stage(a, names, ca);
      const sb = stage(b, names, cb);
      const stages = M.order === "query" ? [sb, sa] : [sa, sb];
      if (C && k < C.scales.length) {
        const info = {
          k,
          row,
          canvases: [ca, cb],
          draw: () => {
            drawOne(ca, mA, mB);
            drawOne(cb, mB, mA);
            if (!state.show) for (const x of [ca, cb]) x.style.display = "none";
          },
        };
        matchable(C, info, [sa, sb]);
      }
      const caption =
        M.order === "query"
          ? el("div", { class: "name", title: names[b], text: short(names[b]) })
          : el("div", {
              class: "name",
              title: `${names[a]}\n${names[b]}`,
              text: `${short(names[a])} · ${short(names[b])}`,
            });
      const c = el(
        "div",
        { class: "card", "data-record": String(rec), "data-k": String(k) },
        ...stages,
        el(
          "div",
          {},
          el("span", { class: "rank", text: `#${rank}` }),
          el("span", { class: "score", text: score.toFixed(4) }),
        ),
        caption,
      );
      c.addEventListener("pointerenter", () => describe(k, row, mA, mB));
      return c;
    };
    if (M.order === "query") {
      let k = 0;
      while (k < data.rows.length) {
        const a = data.rows[k][1];
        const results = el("div", { class: "results" });
        const continued = data.rows[k][4] > 1;
        const section = el(
          "section",
          { class: "query", "data-query": String(a) },
          el(
            "div",
            { class: "qhead" },
            stage(a, names, null),
            el("div", { class: "name", title: names[a], text: short(names[a]) }),
            el("div", { class: "hint", text: continued ? "query (continued)" : "query" }),
          ),
          results,
        );
        while (k < data.rows.length && data.rows[k][1] === a) {
          results.append(card(k, data.rows[k]));
          k++;
        }
        content.append(section);
      }
    } else {
      const results = el("div", { class: "results" });
      data.rows.forEach((row, k) => results.append(card(k, row)));
      content.append(results);
    }
    function drawOne(canvas, values, partner) {
      let [l, h] = pageRange;
      if (state.scale === "pair") {
        const [a0, a1] = PVC.range(values);
        const [b0, b1] = PVC.range(partner);
        l = Math.min(a0, b0);
        h = Math.max(a1, b1);
      }
      PVC.drawMap(canvas, values, gh, gw, l, h, colors, state.smooth);
    }
    for (const [canvas, values, partner] of drawn) drawOne(canvas, values, partner);
    state.pageRange = pageRange;
    mapLegend();
    status.textContent = data.rows.length
      ? `page ${(p + 1).toLocaleString()} of ${M.pages.toLocaleString()}: ` +
        `${data.rows.length} pairs`
      : "empty page";
    document.body.dataset.page = String(p);
    if (timing.rendered === undefined) timing.rendered = performance.now();
    const imgs = Array.from(content.querySelectorAll("img"));
    Promise.all(imgs.map((im) => (im.complete ? null : im.decode().catch(() => null)))).then(
      () => {
        if (timing.images === undefined) timing.images = performance.now();
        document.body.dataset.ready = String(p);
      },
    );
    if (p + 1 < M.pages) setTimeout(() => load(p + 1).catch(() => null), 50); // prefetch
  }

  function sum(values) {
    let s = 0;
    for (const v of values) s += v;
    return s;
  }

  function describe(k, row, mA, mB) {
    const [rec, , , score] = row;
    const [a0, a1] = PVC.range(mA);
    const [b0, b1] = PVC.range(mB);
    const qa = M.order === "query" ? "the query's" : "A's";
    const qb = M.order === "query" ? "the result's" : "B's";
    status.textContent =
      `record ${rec}: cosine ${score.toFixed(4)}; ${qa} map ${PVC.fmt(a0)} to ${PVC.fmt(a1)} ` +
      `(sum ${PVC.fmt(sum(mA))}), ${qb} ${PVC.fmt(b0)} to ${PVC.fmt(b1)} (sum ${PVC.fmt(sum(mB))})`;
  }

  // ------------------------------------------------------------------ navigation
  function show(p) {
    p = Math.min(Math.max(Math.floor(p), 0), M.pages - 1);
    state.page = p;
    pageInput.value = String(p + 1);
    prev.disabled = p === 0;
    next.disabled = p === M.pages - 1;
    if (location.hash !== `#p=${p + 1}`) history.replaceState(null, "", `#p=${p + 1}`);
    if (!cache.has(p)) status.textContent = `loading page ${p + 1}…`;
    load(p)
      .then((data) => {
        if (state.page === p) render(p, data);
      })
      .catch((err) => {
        status.textContent = String(err.message || err);
        status.classList.add("missing");
      });
  }

  prev.addEventListener("click", () => show(state.page - 1));
  next.addEventListener("click", () => show(state.page + 1));
  pageInput.addEventListener("change", () => show(Number(pageInput.value) - 1));
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement && ev.target.type !== "radio") return;
    if (ev.key === "ArrowLeft") show(state.page - 1);
    if (ev.key === "ArrowRight") show(state.page + 1);
  });
  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || !search.value.trim()) return;
    const needle = search.value.trim().toLowerCase();
    loadQueries()
      .then((list) => {
        const start = list.findIndex((q) => q[1] > state.page);
        const order = start < 0 ? list : list.slice(start).concat(list.slice(0, start));
        const hit = order.find((q) => String(q[0]).toLowerCase().includes(needle));
        if (!hit) {
          status.textContent = `no query contains “${search.value.trim()}”`;
          return;
        }
        show(hit[1]);
      })
      .catch((err) => {
        status.textContent = String(err.message || err);
      });
  });
  const redraw = () => state.data && render(state.page, state.data);
  for (const r of document.querySelectorAll('input[name="scale"]'))
    r.addEventListener("change", () => {
      state.scale = r.value;
      redraw();
    });
  document.getElementById("show").addEventListener("change", (ev) => {
    state.show = ev.target.checked;
    redraw();
  });
  document.getElementById("opacity").addEventListener("input", (ev) => {
    state.opacity = ev.target.value / 100;
    for (const c of content.querySelectorAll("canvas.heat")) c.style.opacity = String(state.opacity);
  });
  document.getElementById("smooth").addEventListener("change", (ev) => {
    state.smooth = ev.target.checked;
    redraw();
  });
  window.addEventListener("hashchange", () => {
    const m = /p=(\d+)/.exec(location.hash);
    if (m && Number(m[1]) - 1 !== state.page) show(Number(m[1]) - 1);
  });

  const m = /p=(\d+)/.exec(location.hash);
  show(m ? Number(m[1]) - 1 : 0);
  window.PV = { state, show, load, M };
})();
