// The comparison page's panes: a wrap with its OpenSeadragon element, title and scale bar each,
// the viewer options they share, and the grid they are laid out on.

import { viewerOptions as baseOptions } from "../viewer/osd.js";
import { el } from "../dom.js";

/** The pane's title: experiment, model type, prediction. */
export function paneTitle(meta) {
  const p = meta.probabilities[meta.prediction.index];
  return `${meta.experiment} · ${meta.model_type} · predicted ${meta.prediction.name}`
    + (p === null || p === undefined ? "" : ` ${p.toFixed(2)}`);
}

/** The viewer's pane options, without per-pane buttons: the panes move together. */
export function viewerOptions(element, tileSources, prefixUrl) {
  return baseOptions(element, tileSources, prefixUrl, {
    showRotationControl: false, showZoomControl: false, showHomeControl: false,
  });
}

/** Columns and rows for n equal panes (the lock needs them the same size). */
export function grid(n) {
  const cols = n <= 3 ? n : n === 4 ? 2 : 3;
  return { cols, rows: Math.ceil(n / cols) };
}

export class Pane {
  constructor({ id, title, kind, container, before }) {
    this.kind = kind; // "slide" | "heatmap" | "difference"
    this.wrap = el("div", { className: `pane-wrap compare-pane ${kind}-pane`, dataset: { kind } });
    this.element = el("div", { id, className: "pane" });
    this.label = el("div", { className: "pane-label", title }, title);
    this.bar = el("div", { className: "scalebar" }, el("div", { className: "scalebar-bar" }),
      el("span", { className: "scalebar-label" }, "\u00a0"));
    this.wrap.append(this.element, this.label, this.bar);
    container.insertBefore(this.wrap, before);
    this.viewer = null;
  }
}
