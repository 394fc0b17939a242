// pairviz explore: one pair; hover or tap a patch to see what it matches in the other image.
"use strict";

(() => {
  const D = JSON.parse(document.getElementById("pv-data").textContent);
  const colors = PVC.lut(D.cmap);
  const el = PVC.el;
  const NAMES = ["A", "B"];

  // Decoded arrays per level.
  const levels = {};
  for (const [key, lv] of Object.entries(D.levels)) {
    levels[key] = {
      label: lv.label,
      corr: PVC.f16(lv.corr), // [Na * Nb], row-major: C[i, j] at i * Nb + j
      maps: [PVC.f16(lv.map_a), PVC.f16(lv.map_b)],
      rest: [PVC.f16(lv.rest_a), PVC.f16(lv.rest_b)],
      restAll: lv.rest,
    };
    levels[key].corrRange = PVC.range(levels[key].corr);
  }
  const grids = D.images.map((im) => im.grid);
  const nTok = grids.map((g) => g[0] * g[1]);

  const state = {
    mode: "match",
    level: D.default_level,
    scale: "patch",
    smooth: true,
    opacity: 0.7,
    sel: null, // {side, i}
    pinned: false,
  };

  // ------------------------------------------------------------------ layout
  const radio = (name, value, text, checked) =>
    el(
      "label",
      {},
      el("input", Object.assign({ type: "radio", name, value }, checked ? { checked: "" } : {})),
      " " + text,
    );
  const levelRadios = Object.entries(levels).map(([k, lv], i) =>
    radio("level", k, lv.label, k === state.level || (i === 0 && !levels[state.level])),
  );
  const controls = el(
    "div",
    { class: "controls" },
    el(
      "fieldset",
      {},
      el("legend", { text: "Show" }),
      radio("mode", "match", "what a patch matches", true),
      radio("mode", "maps", "the two paired maps", false),
    ),
    el("fieldset", {}, el("legend", { text: "Level" }), ...levelRadios),
    el(
      "fieldset",
      {},
      el("legend", { text: "Colour scale" }),
      radio("scale", "patch", "this patch's row", true),
      radio("scale", "matrix", "whole matrix", false),
    ),
    el(
      "fieldset",
      {},
      el("legend", { text: "Drawing" }),
      el(
        "label",
        {},
        "opacity ",
        el("input", { type: "range", id: "opacity", min: "0", max: "100", value: "70" }),
      ),
      el("label", {}, el("input", { type: "checkbox", id: "smooth", checked: "" }), " smooth"),
    ),
  );

  const stages = [];
  const figures = D.images.map((im, side) => {
    const [h, w] = im.size;
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const img = el("img", { id: `img-${side}`, src: im.src, alt: `image ${NAMES[side]}` });
    const heat = el("canvas", { id: `heat-${side}`, class: "heat" });
    const marks = el("canvas", { id: `marks-${side}`, class: "marks" });
    for (const c of [heat, marks]) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const stage = el(
      "div",
      {
        class: "stage",
        id: `stage-${side}`,
        tabindex: "0",
        role: "img",
        "aria-label": `image ${NAMES[side]}: point at a patch`,
      },
      img,
      heat,
      marks,
    );
    stage.style.width = `min(${w}px, calc(100vw - 36px))`; // fits a phone's screen
    stage.style.aspectRatio = `${w} / ${h}`;
    stages.push({ stage, img, heat, marks });
    return el(
      "figure",
      { id: `fig-${side}` },
      stage,
      el("figcaption", {}, el("b", { text: NAMES[side] }), " " + im.name),
    );
  });

  const bar = el("canvas", { id: "bar", width: "256", height: "14" });
  const lo = el("span", { id: "lo", class: "tick" });
  const hi = el("span", { id: "hi", class: "tick" });
  const what = el("span", { id: "what" });
  const legend = el("div", { class: "legend" }, lo, bar, hi, what);
  const info = el("p", { id: "info", class: "info" });

  const header = el(
    "header",
    {},
    el("h1", { text: D.title }),
    el(
      "p",
      { class: "meta" },
      el("span", { id: "score", text: `cosine similarity ${D.score.toFixed(4)}` }),
      " · model ",
      el("b", { id: "model", text: D.model }),
      " · method ",
      el("span", { id: "method", text: D.method }),
    ),
  );
  const about = el("details", { class: "about" }, el("summary", { text: "What is shown" }));
  about.insertAdjacentHTML("beforeend", D.about_html);

  document.body.append(
    header,
    controls,
    el("main", { class: "pair" }, ...figures),
    legend,
    info,
    about,
  );
  PVC.drawBar(bar, colors);

  // ------------------------------------------------------------------ drawing
  function row(lv, side, i) {
    // What patch i of `side` matches over the other image.
    const [na, nb] = nTok;
    if (side === 0) return lv.corr.subarray(i * nb, (i + 1) * nb);
    const out = new Float32Array(na);
    for (let k = 0; k < na; k++) out[k] = lv.corr[k * nb + i];
    return out;
  }

  function argmax(values) {
    let best = 0;
    for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
    return best;
  }

  function patchRect(side, i, canvas) {
    const [gh, gw] = grids[side];
    const r = Math.floor(i / gw);
    const c = i % gw;
    const cw = canvas.width / gw;
    const ch = canvas.height / gh;
    return [c * cw, r * ch, cw, ch];
  }

  function drawMarks(side, box, ring) {
    const canvas = stages[side].marks;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const lw = Math.max(1.5, canvas.width / 200);
    if (box !== null) {
      const [x, y, w, h] = patchRect(side, box, canvas);
      ctx.lineWidth = lw * 2;
      ctx.strokeStyle = "rgba(0,0,0,0.8)";
      ctx.strokeRect(x, y, w, h);
      ctx.lineWidth = lw;
      ctx.strokeStyle = state.pinned ? "#00e5ff" : "#ffffff";
      ctx.strokeRect(x, y, w, h);
    }
    if (ring !== null) {
      PVC.ring(ctx, ...patchRect(side, ring, canvas), lw);
    }
  }

  function setLegend(a, b, text) {
    lo.textContent = PVC.fmt(a);
    hi.textContent = PVC.fmt(b);
    what.textContent = text;
  }

  function rc(side, i) {
    const gw = grids[side][1];
    return `(row ${Math.floor(i / gw)}, col ${i % gw})`;
  }

  function render() {
    const lv = levels[state.level];
    stages.forEach((s, side) => {
      s.heat.style.opacity = String(state.opacity);
      // Greyscale under a heatmap (as the figures' modern style); in colour otherwise.
      const heated = state.mode === "maps" || (state.sel !== null && state.sel.side !== side);
      s.img.classList.toggle("grey", heated);
    });
    if (state.mode === "maps") {
      const [a0, a1] = PVC.range(lv.maps[0]);
      const [b0, b1] = PVC.range(lv.maps[1]);
      const l = Math.min(a0, b0);
      const h = Math.max(a1, b1);
      for (const side of [0, 1]) {
        const [gh, gw] = grids[side];
        PVC.drawMap(stages[side].heat, lv.maps[side], gh, gw, l, h, colors, state.smooth);
        drawMarks(side, null, null);
      }
      setLegend(l, h, "paired map value: each patch's share of the cosine (one scale for both)");
      info.textContent =
        `A's map against B sums to ${PVC.fmt(lv.maps[0].reduce((x, y) => x + y, 0))}, ` +
        `B's against A to ${PVC.fmt(lv.maps[1].reduce((x, y) => x + y, 0))}; ` +
        `the cosine is ${PVC.fmt(D.score)}.`;
      document.body.dataset.shown = "maps";
      return;
    }
    if (state.sel === null) {
      for (const side of [0, 1]) {
        PVC.clear(stages[side].heat);
        drawMarks(side, null, null);
      }
      setLegend(lv.corrRange[0], lv.corrRange[1], "C[i, j]: a patch pair's share of the cosine");
      info.textContent =
        "Point at (or tap) a patch of either image to see what it matches in the other; " +
        "click to pin, arrow keys to move.";
      document.body.dataset.shown = "none";
      return;
    }
    const { side, i } = state.sel;
    const other = 1 - side;
    const values = row(lv, side, i);
    const [l, h] = state.scale === "patch" ? PVC.range(values) : lv.corrRange;
    const [gh, gw] = grids[other];
    PVC.drawMap(stages[other].heat, values, gh, gw, l, h, colors, state.smooth);
    PVC.clear(stages[side].heat);
    const best = argmax(values);
    drawMarks(side, i, null);
    drawMarks(other, null, best);
    const sum = values.reduce((x, y) => x + y, 0);
    const rest = lv.rest[side][i];
    setLegend(
      l,
      h,
      `C: ${NAMES[side]}'s patch ${rc(side, i)} with each patch of ${NAMES[other]} ` +
        `(share of the cosine; scale: ${state.scale === "patch" ? "this patch" : "all pairs"})`,
    );
    info.textContent =
      `${NAMES[side]} ${rc(side, i)} matches ${NAMES[other]} ${rc(other, best)} best ` +
      `(${PVC.fmt(values[best])}). Its row sums to ${PVC.fmt(sum)}` +
      (Math.abs(rest) > 1e-6 * Math.abs(D.score) + 1e-9
        ? `; with ${PVC.fmt(rest)} not on ${NAMES[other]}'s patches, ` +
          `${PVC.fmt(sum + rest)} = ${NAMES[side]}'s paired map there.`
        : ` = ${NAMES[side]}'s paired map there.`) +
      (state.pinned ? " (pinned: click again to release)" : "");
    document.body.dataset.shown = `${side}:${i}`;
  }

  // ------------------------------------------------------------------ input
  function patchAt(side, ev) {
    const rect = stages[side].stage.getBoundingClientRect();
    const [gh, gw] = grids[side];
    const x = (ev.clientX - rect.left) / rect.width;
    const y = (ev.clientY - rect.top) / rect.height;
    if (x < 0 || y < 0 || x >= 1 || y >= 1) return null;
    return Math.floor(y * gh) * gw + Math.floor(x * gw);
  }

  function select(side, i, pin) {
    if (pin !== undefined) state.pinned = pin;
    state.sel = { side, i };
    if (state.mode !== "match") setMode("match");
    else render();
  }

  function setMode(mode) {
    state.mode = mode;
    for (const r of document.querySelectorAll('input[name="mode"]')) r.checked = r.value === mode;
    render();
  }

  stages.forEach((s, side) => {
    s.stage.addEventListener("pointermove", (ev) => {
      if (state.pinned || ev.pointerType === "touch") return;
      const i = patchAt(side, ev);
      if (i === null) return;
      if (state.sel && state.sel.side === side && state.sel.i === i && state.mode === "match") return;
      select(side, i);
    });
    s.stage.addEventListener("pointerdown", (ev) => {
      const i = patchAt(side, ev);
      if (i === null) return;
      const same = state.sel && state.sel.side === side && state.sel.i === i;
      select(side, i, ev.pointerType === "touch" ? true : !(same && state.pinned));
      s.stage.focus({ preventScroll: true });
    });
    s.stage.addEventListener("keydown", (ev) => {
      const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
      if (ev.key === "Escape") {
        state.pinned = false;
        state.sel = null;
        render();
        return;
      }
      if (!(ev.key in moves)) return;
      ev.preventDefault();
      const [gh, gw] = grids[side];
      const cur = state.sel && state.sel.side === side ? state.sel.i : 0;
      const r = Math.min(Math.max(Math.floor(cur / gw) + moves[ev.key][0], 0), gh - 1);
      const c = Math.min(Math.max((cur % gw) + moves[ev.key][1], 0), gw - 1);
      select(side, r * gw + c, true);
    });
  });

  for (const r of document.querySelectorAll('input[name="mode"]'))
    r.addEventListener("change", () => setMode(r.value));
  for (const r of document.querySelectorAll('input[name="level"]'))
    r.addEventListener("change", () => {
      state.level = r.value;
      levels[state.level].corrRange = PVC.range(levels[state.level].corr);
      render();
    });
  for (const r of document.querySelectorAll('input[name="scale"]'))
    r.addEventListener("change", () => {
      state.scale = r.value;
      render();
    });
  document.getElementById("opacity").addEventListener("input", (ev) => {
    state.opacity = ev.target.value / 100;
    render();
  });
  document.getElementById("smooth").addEventListener("change", (ev) => {
    state.smooth = ev.target.checked;
    render();
  });

  render();
  window.PV = { state, levels, grids, render, select, setMode };
  document.body.dataset.ready = "1";
})();
