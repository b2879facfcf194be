// One experiment's heatmap settings on the comparison page: colormap, class, scale, threshold,
// with its colorbar and a line for problems. The choices are the experiment's own (its API
// metadata); what a change does (one pane or all) is the page's business (`onSet`).

import { withQuery } from "../viewer/api.js";
import { el } from "../dom.js";
import { paneTitle } from "./panes.js";

export class ExperimentCard {
  /** @param pane  the experiment's settings in the page state (read at every render) */
  constructor({ meta, pane, onSet }) {
    const name = meta.experiment;
    this.meta = meta;
    this.pane = pane;
    this.cmap = el("select", { "aria-label": `${name} colormap` });
    const cmaps = [...new Set([...meta.choices.colormaps, pane.cmap])];
    this.cmap.append(...cmaps.map((c) => el("option", { value: c, textContent: c })));
    this.cls = el("select", { "aria-label": `${name} class` });
    this.cls.append(...meta.classes.filter((c) => c.available).map((c) => {
      const predicted = c.index === meta.prediction.index;
      return el("option", { value: String(c.index), textContent: predicted ? `${c.name} ★` : c.name,
        title: predicted ? "the predicted class" : "" });
    }));
    this.norm = el("select", { "aria-label": `${name} scale` });
    this.norm.append(...meta.choices.norms.map((n) => el("option", { value: n.name, textContent: n.label })));
    const t = meta.choices.threshold;
    this.threshold = el("input", { type: "range", min: t.min, max: t.max, step: t.step, "aria-label": `${name} threshold` });
    this.thresholdValue = el("span", { className: "value num" });
    this.colorbar = el("img", { className: "card-colorbar", alt: `${name} colormap`, width: 296, height: 10 });
    this.error = el("div", { className: "annotation-error" });
    this.element = el("div", { className: "experiment-card", dataset: { experiment: name } },
      el("div", { className: "card-title", textContent: paneTitle(meta) }),
      el("div", { className: "card-row" }, this.cmap, this.cls, this.norm),
      el("div", { className: "card-row" }, el("span", { className: "muted", textContent: "threshold" }),
        this.threshold, this.thresholdValue),
      this.colorbar, this.error);
    this.cmap.addEventListener("change", () => onSet("cmap", this.cmap.value));
    this.cls.addEventListener("change", () => onSet("class", Number(this.cls.value)));
    this.norm.addEventListener("change", () => onSet("norm", this.norm.value));
    this.threshold.addEventListener("change", () => onSet("threshold", Number(this.threshold.value)));
    this.threshold.addEventListener("input", () => {
      this.thresholdValue.textContent = Number(this.threshold.value).toFixed(2);
    });
  }

  render() {
    const s = this.pane;
    this.cmap.value = s.cmap;
    this.cls.value = String(s.class);
    this.norm.value = s.norm;
    this.threshold.value = String(s.threshold);
    this.thresholdValue.textContent = s.threshold.toFixed(2);
    this.colorbar.src = withQuery(this.meta.urls.colorbar, { cmap: s.cmap, width: 296, height: 10 });
    this.error.textContent = "";
  }
}
