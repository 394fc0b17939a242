// pairviz viewer: shared drawing code (no dependencies, no network).
"use strict";

const PVC = (() => {
  let f16table = null;

  // IEEE half -> float, one table for all 65536 codes.
  function table() {
    if (f16table) return f16table;
    f16table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 31;
      const f = h & 1023;
      if (e === 0) f16table[h] = s * f * 2 ** -24;
      else if (e === 31) f16table[h] = f ? NaN : s * Infinity;
      else f16table[h] = s * (1 + f / 1024) * 2 ** (e - 15);
    }
    return f16table;
  }

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // {"b64", "shape", "scale"} (little-endian float16) -> Float32Array.
  function f16(obj) {
    const raw = bytes(obj.b64);
    const n = raw.length >> 1;
    const t = table();
    const out = new Float32Array(n);
    const scale = obj.scale === undefined ? 1 : obj.scale;
    for (let i = 0; i < n; i++) out[i] = t[raw[2 * i] | (raw[2 * i + 1] << 8)] * scale;
    return out;
  }

  function lut(b64) {
    return bytes(b64); // 256 x RGB
  }

  function range(values) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    return [lo, hi];
  }

  // Draws a gh x gw map over the whole canvas: bilinear between patch centres
  // (half-pixel centres, border replicated) or one block per patch; colour from lut.
  function drawMap(canvas, values, gh, gw, lo, hi, colors, smooth) {
    const w = canvas.width;
    const h = canvas.height;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const px = img.data;
    const span = hi > lo ? hi - lo : 1;
    const xs = new Int32Array(w * 2);
    const xf = new Float32Array(w);
    for (let x = 0; x < w; x++) {
      let u = ((x + 0.5) * gw) / w - 0.5;
      if (!smooth) u = Math.floor(((x + 0.5) * gw) / w);
      u = Math.min(Math.max(u, 0), gw - 1);
      const x0 = Math.floor(u);
      xs[2 * x] = x0;
      xs[2 * x + 1] = Math.min(x0 + 1, gw - 1);
      xf[x] = u - x0;
    }
    for (let y = 0; y < h; y++) {
      let v = ((y + 0.5) * gh) / h - 0.5;
      if (!smooth) v = Math.floor(((y + 0.5) * gh) / h);
      v = Math.min(Math.max(v, 0), gh - 1);
      const y0 = Math.floor(v);
      const y1 = Math.min(y0 + 1, gh - 1);
      const fy = v - y0;
      const r0 = y0 * gw;
      const r1 = y1 * gw;
      for (let x = 0; x < w; x++) {
        const a = xs[2 * x];
        const b = xs[2 * x + 1];
        const fx = xf[x];
        const top = values[r0 + a] * (1 - fx) + values[r0 + b] * fx;
        const bot = values[r1 + a] * (1 - fx) + values[r1 + b] * fx;
        const val = top * (1 - fy) + bot * fy;
        let k = Math.round(((val - lo) / span) * 255);
        k = k < 0 ? 0 : k > 255 ? 255 : k;
        const o = 4 * (y * w + x);
        px[o] = colors[3 * k];
        px[o + 1] = colors[3 * k + 1];
        px[o + 2] = colors[3 * k + 2];
        px[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  function clear(canvas) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }

  function drawBar(canvas, colors) {
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, canvas.height);
    for (let x = 0; x < canvas.width; x++) {
      const k = Math.round((x / Math.max(canvas.width - 1, 1)) * 255);
      for (let y = 0; y < canvas.height; y++) {
        const o = 4 * (y * canvas.width + x);
        img.data[o] = colors[3 * k];
        img.data[o + 1] = colors[3 * k + 1];
        img.data[o + 2] = colors[3 * k + 2];
        img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  function fmt(v) {
    if (!isFinite(v)) return String(v);
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 0.01 && a < 1000) return v.toPrecision(3);
    return v.toExponential(2);
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  // The best-match ring around the cell (x, y, w, h): dark halo under a green line of width lw.
  function ring(ctx, x, y, w, h, lw) {
    ctx.beginPath();
    ctx.arc(x + w / 2, y + h / 2, Math.max(w, h) * 0.75, 0, 2 * Math.PI);
    ctx.lineWidth = lw * 2;
    ctx.strokeStyle = "rgba(0,0,0,0.7)";
    ctx.stroke();
    ctx.lineWidth = lw;
    ctx.strokeStyle = "#7CFC00";
    ctx.stroke();
  }

  return { f16, lut, range, drawMap, drawBar, clear, fmt, el, bytes, ring };
})();
