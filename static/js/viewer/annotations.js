// Ground-truth outlines on every pane (from /api/slides/<id>/annotations, level-0 pixels), drawn
// on a canvas above each viewer at every viewport update, a legend by class with a toggle, and
// the localisation figures of the attention against them (/localization).

import { getJSON, withQuery } from "./api.js";
import { localizationText } from "./figures.js";

const $ = (id) => document.getElementById(id);

function rings(geometry) {
  if (geometry.type === "Polygon") return geometry.coordinates;
  if (geometry.type === "MultiPolygon") return geometry.coordinates.flat();
  return [];
}

export class AnnotationLayer {
  constructor({ meta, state, viewers, offset }) {
    this.meta = meta;
    this.state = state; // null: outlines and legend only (the comparison page writes the figures)
    this.offset = offset;
    this.features = [];
    this.visible = true;
    this.el = { panel: $("annotations-panel"), toggle: $("annotations-toggle"), legend: $("annotations-legend"),
                figures: $("localization") };
    this.viewers = [];
    this.canvases = [];
    for (const v of viewers) this.addViewer(v);
    this.el.toggle.addEventListener("change", () => {
      this.visible = this.el.toggle.checked;
      this.redraw();
    });
    this.hooks = { screenPoints: (i) => this.screenPoints(i) };
  }

  /** Draw on one more viewer (a pane opened later: the comparison's difference pane). */
  addViewer(v) {
    const c = document.createElement("canvas");
    c.className = "annotation-canvas";
    v.container.parentElement.append(c);
    v.addHandler("update-viewport", () => this.draw(v, c));
    this.viewers.push(v);
    this.canvases.push(c);
    this.draw(v, c);
  }

  async load() {
    const body = await getJSON(this.meta.urls.annotations);
    if (!body.file) return; // no ground truth for this slide
    this.el.panel.hidden = false;
    if (body.error) { // the message names the file already
      this.el.legend.textContent = body.error;
      this.el.legend.title = body.error;
      this.el.legend.classList.add("annotation-error");
      return;
    }
    this.features = body.geojson.features;
    this.el.legend.replaceChildren(...body.classes.map((c) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("i");
      swatch.style.background = `rgb(${c.color.map(Number).join(",")})`;
      item.append(swatch);
      const area = c.area_mm2 !== null ? `${c.area_mm2.toFixed(2)} mm²` : `${Math.round(c.area_px).toLocaleString("en")} px²`;
      item.append(document.createTextNode(`${c.name} ${area}`));
      return item;
    }));
    this.redraw();
    if (this.state) await this.loadFigures(); // the comparison page shows its own, per experiment
  }

  /** The region the Dice is of: what the overlay shows (threshold and range), else nothing (the
   *  server's default region; the answer's `range` says which it took). */
  diceRange() {
    const lo = Math.max(this.state.lo, this.state.threshold);
    const hi = this.state.hi;
    return lo > 0 || hi < 1 ? { lo: lo.toFixed(4), hi: hi.toFixed(4) } : {};
  }

  scheduleFigures() {
    if (!this.features.length) return;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.loadFigures().catch(() => {}), 150);
  }

  async loadFigures() {
    if (!this.features.length) return;
    const body = await getJSON(withQuery(this.meta.urls.localization, {
      class: this.state.class, norm: this.state.norm, ...this.diceRange() }));
    this.el.figures.replaceChildren(...body.classes.map((c) => {
      const row = document.createElement("div");
      row.className = "localization-row";
      row.textContent = localizationText(c);
      return row;
    }));
    this.el.figures.dataset.loaded = "true";
    this.el.figures.dataset.range = `${body.range.lo.toFixed(4)},${body.range.hi.toFixed(4)}`;
  }

  redraw() {
    this.viewers.forEach((v, i) => this.draw(v, this.canvases[i]));
  }

  /** Screen (pane) coordinates of every vertex of ring 0 of feature 0, for the tests. */
  screenPoints(i) {
    const v = this.viewers[i];
    const item = v.world.getItemAt(0);
    if (!item || !this.features.length) return [];
    return rings(this.features[0].geometry)[0].map(([x, y]) => {
      const p = v.viewport.pixelFromPoint(item.imageToViewportCoordinates(x - this.offset[0], y - this.offset[1]), true);
      return [p.x, p.y];
    });
  }

  draw(viewer, canvas) {
    const size = viewer.viewport.getContainerSize();
    if (canvas.width !== size.x || canvas.height !== size.y) {
      canvas.width = size.x;
      canvas.height = size.y;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const item = viewer.world.getItemAt(0);
    if (!this.visible || !item || !this.features.length) return;
    ctx.lineWidth = 2;
    for (const feature of this.features) {
      const [r, g, b] = feature.properties.classification.color;
      ctx.strokeStyle = `rgb(${r}, ${g}, ${b})`;
      ctx.beginPath();
      for (const ring of rings(feature.geometry)) {
        ring.forEach(([x, y], k) => {
          const p = viewer.viewport.pixelFromPoint(
            item.imageToViewportCoordinates(x - this.offset[0], y - this.offset[1]), true);
          if (k === 0) ctx.moveTo(p.x, p.y);
          else ctx.lineTo(p.x, p.y);
        });
        ctx.closePath();
      }
      ctx.stroke();
    }
  }
}
