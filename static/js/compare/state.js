// The comparison page's state, mirrored to the URL so that a copied link reopens the comparison:
//
//   exp             the experiments compared, in pane order (the page's own parameter)
//   x, y, zoom, rot the view, as on the slide page (level-0 centre, screen px per level-0 px)
//   alpha           the heatmaps' opacity (every pane)
//   lock            1: one set of heatmap settings for every pane, 0: each pane its own
//   diff, da, db    the difference pane (1/0) and its experiments: percentile(da) - percentile(db)
//   <EXP>.cmap, <EXP>.class, <EXP>.norm, <EXP>.threshold   each experiment's heatmap
//
// Values are checked against each experiment's metadata (its defaults, classes and ranges).

import { readHeatmap, readNumber, readView, round, writeView } from "../viewer/state.js";

/** One experiment's heatmap settings from the URL (`<EXP>.cmap`, ...), else its defaults. */
function paneState(meta, q) {
  const d = meta.defaults;
  return { cmap: d.cmap, class: d.class, norm: d.norm, threshold: d.threshold ?? 0, blur: false, lo: 0, hi: 1,
           ...readHeatmap(q, meta, `${meta.experiment}.`) };
}

export function initialCompareState(metas, search) {
  const q = new URLSearchParams(search);
  const names = metas.map((m) => m.experiment);
  const first = metas[0];
  const state = {
    experiments: names,
    x: null, y: null, zoom: null, rotation: 0,
    alpha: first.defaults.alpha,
    locked: q.get("lock") === "1",
    diff: q.get("diff") === "1",
    diffA: names.includes(q.get("da")) ? q.get("da") : names[0],
    diffB: names.includes(q.get("db")) ? q.get("db") : names[1],
    panes: Object.fromEntries(metas.map((m) => [m.experiment, paneState(m, q)])),
  };
  if (state.diffA === state.diffB) [state.diffA, state.diffB] = [names[0], names[1]];
  Object.assign(state, readView(q, first.dimensions));
  const alpha = readNumber(q, "alpha", 0, 1);
  if (alpha !== null) state.alpha = alpha;
  return state;
}

export function compareQuery(state) {
  const q = new URLSearchParams();
  q.set("exp", state.experiments.join(","));
  writeView(q, state);
  q.set("alpha", round(state.alpha, 2));
  q.set("lock", state.locked ? "1" : "0");
  q.set("diff", state.diff ? "1" : "0");
  q.set("da", state.diffA);
  q.set("db", state.diffB);
  for (const name of state.experiments) {
    const pane = state.panes[name];
    q.set(`${name}.cmap`, pane.cmap);
    q.set(`${name}.class`, String(pane.class));
    q.set(`${name}.norm`, pane.norm);
    q.set(`${name}.threshold`, round(pane.threshold, 2));
  }
  return q.toString();
}
