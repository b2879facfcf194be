// The heatmap controls in the sidebar and the layout toggle in the top bar. They edit the state
// object and call back: `onAlpha` (opacity only, nothing re-fetched), `onOverlay` (a new heatmap:
// colormap, class, normalisation, threshold, blur), `onClass`, `onMode`.

import { withQuery } from "./api.js";
import { formatScore } from "./patches.js";

const LEGEND_WIDTH = 296;
const LEGEND_HEIGHT = 14;

const $ = (id) => document.getElementById(id);

export class Controls {
  constructor({ meta, state, onAlpha, onOverlay, onClass, onMode, onScale }) {
    this.meta = meta;
    this.state = state;
    this.onAlpha = onAlpha;
    this.onOverlay = onOverlay;
    this.onClass = onClass;
    this.onScale = onScale || (() => {});
    this.onMode = onMode;
    this.el = {
      alpha: $("alpha"), alphaValue: $("alpha-value"), cmap: $("cmap"), cmapCustom: $("cmap-custom"),
      cmapError: $("cmap-error"), classSelect: $("class-select"), threshold: $("threshold"),
      thresholdValue: $("threshold-value"), blur: $("blur"), colorbar: $("colorbar"),
      legendMin: $("legend-min"), legendMid: $("legend-mid"), legendMax: $("legend-max"),
      legendNote: $("legend-note"), className: $("overlay-class-name"), normGroup: $("norms"),
      modes: Array.from(document.querySelectorAll("[data-mode]")),
    };
    this._buildChoices();
    this._buildClassMenu();
    this._bind();
  }

  colorbarUrl(cmap) {
    return withQuery(this.meta.urls.colorbar, { cmap, width: LEGEND_WIDTH, height: LEGEND_HEIGHT });
  }

  /** Ask the server whether `name` is a colormap it knows; null when it is, else its message. */
  async checkCmap(name) {
    try {
      const response = await fetch(this.colorbarUrl(name));
      if (response.ok) return null;
      const body = await response.json().catch(() => null);
      return (body && body.error) || `unknown colormap "${name}"`;
    } catch (err) {
      return `cannot check the colormap: ${err.message}`;
    }
  }

  /** The colormap menu, the scale buttons and the slider ranges, as the server offers them. */
  _buildChoices() {
    const { cmap, normGroup, threshold, alpha } = this.el;
    const choices = this.meta.choices;
    cmap.replaceChildren(...choices.colormaps.map((name) => new Option(name, name)));
    normGroup.replaceChildren(...choices.norms.map((n) => {
      const input = document.createElement("input");
      Object.assign(input, { type: "radio", name: "norm", value: n.name });
      const text = document.createElement("span");
      text.textContent = n.label;
      const label = document.createElement("label");
      label.title = n.title;
      label.append(input, text);
      return label;
    }));
    this.el.norms = Array.from(normGroup.querySelectorAll('input[name="norm"]'));
    for (const [input, range] of [[threshold, choices.threshold], [alpha, choices.alpha]]) {
      Object.assign(input, { min: String(range.min), max: String(range.max), step: String(range.step) });
    }
  }

  _buildClassMenu() {
    const { classSelect } = this.el;
    const predicted = this.meta.prediction.index;
    const available = this.meta.classes.filter((c) => c.available);
    classSelect.replaceChildren(...this.meta.classes.map((c) => {
      const p = c.probability === null ? "" : ` ${c.probability.toFixed(2)}`;
      const note = c.index === predicted ? " (predicted)" : (c.available ? "" : " (no attention)");
      const option = new Option(`${c.name}${note}${p}`, String(c.index));
      option.disabled = !c.available;
      return option;
    }));
    if (available.length <= 1) {
      classSelect.disabled = true;
      classSelect.title = `This model (${this.meta.model_type}) gives attention for the predicted class only`;
    } else {
      classSelect.title = "Show the attention of another class";
    }
  }

  _ensureCmapOption(name) {
    const { cmap } = this.el;
    if (!Array.from(cmap.options).some((o) => o.value === name)) cmap.append(new Option(name, name));
    cmap.value = name;
  }

  /** Put the state's values into the controls (page load). */
  render() {
    const s = this.state;
    const el = this.el;
    el.alpha.value = String(s.alpha);
    el.alphaValue.textContent = s.alpha.toFixed(2);
    this._ensureCmapOption(s.cmap);
    el.classSelect.value = String(s.class);
    for (const radio of el.norms) radio.checked = radio.value === s.norm;
    el.threshold.value = String(s.threshold);
    el.thresholdValue.textContent = s.threshold.toFixed(2);
    el.blur.checked = s.blur;
    this.renderMode();
    this.renderLegend();
  }

  renderMode() {
    for (const button of this.el.modes) button.setAttribute("aria-pressed", String(button.dataset.mode === this.state.mode));
  }

  renderLegend() {
    const s = this.state;
    const el = this.el;
    const src = this.colorbarUrl(s.cmap);
    if (el.colorbar.getAttribute("src") !== src) el.colorbar.src = src;
    el.colorbar.alt = `Colormap ${s.cmap}`;
    const cls = this.meta.classes[s.class];
    el.className.textContent = cls ? cls.name : String(s.class);
    let note;
    if (s.norm === "percentile") {
      el.legendMin.textContent = "0";
      el.legendMid.textContent = "50";
      el.legendMax.textContent = "100";
      note = "percentile of attention in this slide";
      if (s.threshold > 0) note += ` · hidden below ${(s.threshold * 100).toFixed(0)}`;
    } else {
      const lo = cls ? cls.score_min : null;
      const hi = cls ? cls.score_max : null;
      const known = lo !== null && hi !== null;
      el.legendMin.textContent = known ? formatScore(lo) : "min";
      el.legendMid.textContent = known ? formatScore((lo + hi) / 2) : "";
      el.legendMax.textContent = known ? formatScore(hi) : "max";
      note = "raw attention score (min–max)";
      if (s.threshold > 0 && known) note += ` · hidden below ${formatScore(lo + s.threshold * (hi - lo))}`;
    }
    el.legendNote.textContent = note;
    el.legendNote.title = note;
  }

  setCmapError(message) {
    // one line, so nothing below moves: the first clause shown, the whole message on hover
    this.el.cmapError.textContent = message ? message.split(";")[0] : "";
    this.el.cmapError.title = message || "";
    this.el.cmapCustom.setAttribute("aria-invalid", message ? "true" : "false");
  }

  _setCmap(name) {
    this.state.cmap = name;
    this._ensureCmapOption(name);
    this.setCmapError(null);
    this.renderLegend();
    this.onOverlay();
  }

  async _applyCustomCmap() {
    const { cmapCustom } = this.el;
    const name = cmapCustom.value.trim();
    if (!name || name === this.state.cmap) {
      this.setCmapError(null);
      return;
    }
    const problem = await this.checkCmap(name);
    if (cmapCustom.value.trim() !== name) return; // typed on meanwhile
    if (problem) {
      this.setCmapError(problem);
      return;
    }
    this._setCmap(name);
  }

  _bind() {
    const el = this.el;
    const s = this.state;
    el.alpha.addEventListener("input", () => {
      s.alpha = Number(el.alpha.value);
      el.alphaValue.textContent = s.alpha.toFixed(2);
      this.onAlpha();
    });
    el.cmap.addEventListener("change", () => {
      el.cmapCustom.value = "";
      this._setCmap(el.cmap.value);
    });
    el.cmapCustom.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this._applyCustomCmap(); }
      if (e.key === "Escape") { el.cmapCustom.value = ""; this.setCmapError(null); }
    });
    el.cmapCustom.addEventListener("change", () => this._applyCustomCmap());
    el.classSelect.addEventListener("change", () => {
      s.class = Number(el.classSelect.value);
      this.renderLegend();
      this.onOverlay();
      this.onClass();
    });
    for (const radio of el.norms) {
      radio.addEventListener("change", () => {
        if (!radio.checked) return;
        s.norm = radio.value;
        this.renderLegend();
        this.onOverlay();
        this.onScale();
      });
    }
    el.threshold.addEventListener("input", () => {
      el.thresholdValue.textContent = Number(el.threshold.value).toFixed(2);
    });
    el.threshold.addEventListener("change", () => {
      s.threshold = Number(el.threshold.value);
      el.thresholdValue.textContent = s.threshold.toFixed(2);
      this.renderLegend();
      this.onOverlay();
    });
    el.blur.addEventListener("change", () => {
      s.blur = el.blur.checked;
      this.onOverlay();
    });
    for (const button of el.modes) {
      button.addEventListener("click", () => {
        if (s.mode === button.dataset.mode) return;
        s.mode = button.dataset.mode;
        this.renderMode();
        this.onMode();
      });
    }
  }
}
