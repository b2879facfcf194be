// The score histogram under the colorbar: bars in the colormap's colours, a draggable range
// (two handles: lower and upper bound) that recolours the overlay live, and a read-out of the
// patches in range, their union area and its share of the scored area. Counts and areas are the
// server's (/histogram, /regions); the range is part of the state (lo, hi in the URL).

import { getJSON, withQuery } from "./api.js";

const $ = (id) => document.getElementById(id);
const BINS = 64;
const DRAG_REFRESH_MS = 250;

function formatArea(body) {
  if (body.area_mm2 !== null) {
    const mm2 = body.area_mm2;
    return `${mm2 >= 1 ? mm2.toFixed(2) : mm2.toFixed(3)} mm²`;
  }
  return `${Math.round(body.area_px).toLocaleString()} px²`;
}

export class Histogram {
  constructor({ meta, state, onRange }) {
    this.meta = meta;
    this.state = state;
    this.onRange = onRange;
    this.canvas = $("histogram");
    this.readout = $("range-readout");
    this.colorbar = $("colorbar");
    this.counts = null;
    this.drag = null;
    this.lastRefresh = 0;
    this.readoutRequest = 0;
    this.hooks = { readout: null };
    this._bind();
  }

  query() {
    const s = this.state;
    return { class: s.class, norm: s.norm, lo: s.lo.toFixed(3), hi: s.hi.toFixed(3) };
  }

  /** Fetch the counts for the state's class and normalisation, then draw. */
  async load() {
    const body = await getJSON(withQuery(this.meta.urls.histogram, { ...this.query(), bins: BINS }));
    this.counts = body.counts;
    this.draw();
    await this.refreshReadout();
  }

  /** The colormap's colour at t in 0..1, read from the colorbar image on show. */
  _colours() {
    const img = this.colorbar;
    if (!img.complete || !img.naturalWidth) return null;
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = 1;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0, img.naturalWidth, 1);
    return ctx.getImageData(0, 0, c.width, 1).data;
  }

  draw() {
    if (!this.counts) return;
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    const w = canvas.width;
    const h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...this.counts);
    const colours = this._colours();
    const n = this.counts.length;
    for (let i = 0; i < n; i++) {
      const t = (i + 0.5) / n;
      const inRange = t >= this.state.lo && t <= this.state.hi;
      if (colours) {
        const k = Math.min(colours.length / 4 - 1, Math.floor(t * (colours.length / 4)));
        ctx.fillStyle = `rgba(${colours[4 * k]}, ${colours[4 * k + 1]}, ${colours[4 * k + 2]}, ${inRange ? 1 : 0.25})`;
      } else {
        ctx.fillStyle = inRange ? "#9ab" : "#345";
      }
      const bh = Math.max(this.counts[i] ? 1 : 0, Math.round((this.counts[i] / max) * (h - 8)));
      ctx.fillRect(Math.floor((i / n) * w), h - bh, Math.ceil(w / n) - 1, bh);
    }
    ctx.fillStyle = "#fff";
    for (const v of [this.state.lo, this.state.hi]) ctx.fillRect(Math.round(v * (w - 2)), 0, 2, h);
  }

  async refreshReadout() {
    const request = ++this.readoutRequest;
    const body = await getJSON(withQuery(this.meta.urls.regions, { ...this.query(), geojson: 0 }));
    if (request !== this.readoutRequest) return; // a newer range was asked for meanwhile
    const share = body.share === null ? "" : ` (${(body.share * 100).toFixed(1)} % of the scored area)`;
    this.readout.textContent = `${body.patches.toLocaleString()} patches in [${body.range.lo.toFixed(2)}, `
      + `${body.range.hi.toFixed(2)}] · ${formatArea(body)}${share}`;
    this.readout.dataset.patches = String(body.patches);
    this.readout.dataset.areaPx = String(body.area_px);
    this.hooks.readout = body;
  }

  _value(event) {
    const rect = this.canvas.getBoundingClientRect();
    return Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
  }

  _set(value, final) {
    const s = this.state;
    if (this.drag === "lo") s.lo = Math.min(value, s.hi);
    else s.hi = Math.max(value, s.lo);
    this.draw();
    const now = performance.now();
    if (final || now - this.lastRefresh > DRAG_REFRESH_MS) {
      this.lastRefresh = now;
      this.onRange();
      this.refreshReadout().catch(() => {});
    }
  }

  _bind() {
    this.canvas.addEventListener("pointerdown", (event) => {
      const v = this._value(event);
      this.drag = Math.abs(v - this.state.lo) <= Math.abs(v - this.state.hi) ? "lo" : "hi";
      this.canvas.setPointerCapture(event.pointerId);
      this._set(v, false);
    });
    this.canvas.addEventListener("pointermove", (event) => { if (this.drag) this._set(this._value(event), false); });
    const end = (event) => {
      if (!this.drag) return;
      this._set(this._value(event), true);
      this.drag = null;
    };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
    this.colorbar.addEventListener("load", () => this.draw());
  }
}
