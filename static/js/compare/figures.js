// The comparison page's figures as rows: agreement of two experiments, localisation of one.

import { format, localizationText } from "../viewer/figures.js";
import { el } from "../dom.js";
import { jaccard } from "./dom.js";

/** One pair's agreement (/api/slides/<id>/agreement): rho, top-k Jaccard, what was compared. */
export function agreementRow(body) {
  return el("div", { className: "agreement-row" },
    el("b", { textContent: `${body.a.experiment} vs ${body.b.experiment}` }),
    el("div", { textContent: `Spearman ρ ${format(body.spearman)} · top-10 Jaccard ${jaccard(body, 10)} · `
      + `top-50 ${jaccard(body, 50)}` }),
    el("div", { className: "muted small", textContent: body.unit === "patches"
      ? `over the ${body.n} patches both scored`
      : `over ${body.n} cells of ${body.l0_cell} px (the grids differ)` }),
    el("div", { className: body.same_prediction ? "muted small" : "mismatch small",
      textContent: body.same_prediction ? `both predict ${body.a.prediction.name}`
        : `predictions differ: ${body.a.prediction.name} vs ${body.b.prediction.name}` }));
}

/** One experiment's localisation figures for one annotated class (/localization). */
export function localizationRow(experiment, c) {
  return el("div", { className: "localization-row", dataset: { experiment, class: c.class },
    textContent: `${experiment} · ${localizationText(c)}` });
}
