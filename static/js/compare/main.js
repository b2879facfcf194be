// The comparison page: the slide and one heatmap pane per experiment (and, on demand, the
// difference of two), all locked both ways by the slide page's ViewportLock; per-pane or shared
// heatmap settings; the agreement figures and each experiment's top 10, shared patches marked.
//
// Everything comes from the API: /api/slides/<id>?exp=<name> per experiment (its defaults,
// choices and URLs, each carrying ?exp=), /api/slides/<id>/agreement for the figures.
// Test hooks live on `window.milCompare`.

import { AnnotationLayer } from "../viewer/annotations.js";
import { getJSON, withQuery } from "../viewer/api.js";
import { OverlayLayer } from "../viewer/overlay.js";
import { ScaleBar } from "../viewer/scalebar.js";
import { availableClasses } from "../viewer/state.js";
import { ViewportLock, isAnimating } from "../viewer/sync.js";
import { agreementRow, localizationRow } from "./figures.js";
import { el } from "./dom.js";
import { ExperimentCard } from "./cards.js";
import { Pane, grid, paneTitle, viewerOptions } from "./panes.js";
import { compareQuery, initialCompareState } from "./state.js";
import { TopLists } from "./topk.js";

const root = document.getElementById("compare");
const panesEl = document.getElementById("panes");
const statusEl = document.getElementById("pane-status");
const $ = (id) => document.getElementById(id);
const hooks = { ready: false, error: null };
window.milCompare = hooks;

function showStatus(message, isError = false) {
  statusEl.hidden = !message;
  statusEl.textContent = message || "";
  statusEl.classList.toggle("error", isError);
  if (isError) hooks.error = message;
}

async function main() {
  if (root.dataset.readable !== "true") {
    showStatus(`This slide cannot be shown: ${root.dataset.error || "unreadable"}`, true);
    return;
  }
  if (!window.OpenSeadragon) {
    showStatus("OpenSeadragon is not installed: run `make install` (it runs `npm ci`) and restart the viewer.", true);
    return;
  }
  const names = root.dataset.experiments.split(",");
  let metas;
  try {
    metas = await Promise.all(names.map((name) => getJSON(withQuery(root.dataset.api, { exp: name }))));
  } catch (err) {
    showStatus(`Cannot load the slide: ${err.message}`, true);
    return;
  }
  const byName = Object.fromEntries(metas.map((m) => [m.experiment, m]));
  const first = metas[0];
  const [offX, offY] = first.deepzoom.l0_offset;
  const state = initialCompareState(metas, window.location.search);
  // a colormap name from the link that matplotlib does not know: the pane's default, and say so
  const problems = {};
  const unknown = metas.filter((m) => !m.choices.colormaps.includes(state.panes[m.experiment].cmap));
  if (unknown.length) {
    const known = new Set((await getJSON(first.choices.colormaps_url)).all);
    for (const m of unknown) {
      const pane = state.panes[m.experiment];
      if (!known.has(pane.cmap)) {
        problems[m.experiment] = `unknown colormap ${pane.cmap} in the link, showing ${m.defaults.cmap}`;
        pane.cmap = m.defaults.cmap;
      }
    }
  }
  let urlTimer = null;
  const flushUrl = () => {
    clearTimeout(urlTimer);
    urlTimer = null;
    const search = "?" + compareQuery(state);
    if (search !== window.location.search) window.history.replaceState(null, "", window.location.pathname + search);
  };
  const scheduleUrl = () => { if (urlTimer === null) urlTimer = setTimeout(flushUrl, 250); };

  // ---- panes ----
  const where = { container: panesEl, before: statusEl };
  const slidePane = new Pane({ id: "pane-slide", title: "Slide", kind: "slide", ...where });
  const heatmapPanes = metas.map((meta, i) => {
    const pane = new Pane({ id: `pane-${i}`, title: paneTitle(meta), kind: "heatmap", ...where });
    pane.wrap.dataset.experiment = meta.experiment;
    pane.overlay = new OverlayLayer(meta.dzi.overlay);
    pane.meta = meta;
    return pane;
  });
  const diffPane = new Pane({ id: "pane-difference", title: "", kind: "difference", ...where });
  const panes = [slidePane, ...heatmapPanes, diffPane];
  const shown = () => panes.filter((p) => p.kind !== "difference" || state.diff);

  function layout() {
    diffPane.wrap.hidden = !state.diff;
    const { cols, rows } = grid(shown().length);
    panesEl.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
    panesEl.style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
  }
  layout();

  const opened = new Set();
  let lock = null;
  function applyInitialView(viewer) {
    const vp = viewer.viewport;
    if (state.rotation) vp.setRotation(state.rotation, true);
    if (state.x === null) return;
    const item = viewer.world.getItemAt(0);
    vp.zoomTo(item.imageToViewportZoom(state.zoom), null, true);
    vp.panTo(item.imageToViewportCoordinates(state.x - offX, state.y - offY), true);
  }
  function readView(viewer) {
    const item = viewer.world.getItemAt(0);
    if (!item || !opened.has(viewer)) return;
    const vp = viewer.viewport;
    const center = item.viewportToImageCoordinates(vp.getCenter(true));
    state.x = center.x + offX;
    state.y = center.y + offY;
    state.zoom = item.viewportToImageZoom(vp.getZoom(true));
    state.rotation = ((vp.getRotation(true) % 360) + 360) % 360;
    scheduleUrl();
  }
  function open(pane, tileSources) {
    const viewer = OpenSeadragon(viewerOptions(pane.element, tileSources, root.dataset.osdImages));
    pane.viewer = viewer;
    pane.scale = new ScaleBar(pane.bar, viewer, first.mpp);
    viewer.addHandler("open", () => {
      const ready = lock.viewers.find((v) => opened.has(v));
      if (!ready) applyInitialView(viewer);
      opened.add(viewer);
      lock.setReady(viewer);
      pane.scale.update();
      if (heatmapPanes.every((p) => opened.has(p.viewer)) && opened.has(slidePane.viewer) && !hooks.ready) {
        showStatus(null);
        hooks.ready = true;
        readView(heatmapPanes[0].viewer);
      }
    });
    viewer.addHandler("open-failed", (e) => showStatus(`Cannot open the slide: ${e.message || "tile source failed"}`, true));
    viewer.addHandler("viewport-change", () => {
      // the view is read from panes on show only: a hidden difference pane is 1 px wide
      if (!shown().includes(pane)) return;
      if (lock.leader === viewer || !isAnimating(lock.leader)) readView(viewer);
    });
    viewer.addHandler("animation-finish", flushUrl);
    return viewer;
  }

  lock = new ViewportLock();
  const addToLock = (viewer) => lock.add(viewer);
  for (const pane of heatmapPanes) {
    addToLock(open(pane, [first.dzi.slide, pane.overlay.initialSource({ ...state.panes[pane.meta.experiment], alpha: state.alpha })]));
    pane.overlay.attach(pane.viewer);
  }
  addToLock(open(slidePane, first.dzi.slide));
  lock.leader = heatmapPanes[0].viewer;

  // ---- ground truth: outlines on every pane, each experiment's localisation figures ----
  const annotations = new AnnotationLayer({ meta: first, state: null, offset: [offX, offY],
    viewers: [slidePane.viewer, ...heatmapPanes.map((p) => p.viewer)] });
  async function loadGroundTruth() {
    await annotations.load();
    await loadFigures();
  }
  let figuresAsked = 0;
  async function loadFigures() {
    if (!annotations.features.length) return;
    const asked = ++figuresAsked;
    // each experiment's figures of what its pane shows: its class and scale, the Dice of its region
    // at or above its threshold (0.5 where none is set, as on the slide page)
    const bodies = await Promise.all(metas.map((m) => {
      const pane = state.panes[m.experiment];
      return getJSON(withQuery(m.urls.localization, { class: pane.class, norm: pane.norm,
        lo: (pane.threshold > 0 ? pane.threshold : 0.5).toFixed(4), hi: "1" }));
    }));
    if (asked !== figuresAsked) return; // a newer request is on its way
    $("localization").replaceChildren(...bodies.flatMap((body, i) => body.classes.map((c) => localizationRow(names[i], c))));
    $("localization").dataset.loaded = "true";
  }
  loadGroundTruth().catch((err) => console.warn("annotations:", err.message));

  // ---- the difference pane ----
  let diffItem = null;
  let diffGeneration = 0;
  const diffUrl = () => withQuery(byName[state.diffA].dzi.overlay, { minus: state.diffB, cmap: first.defaults.difference_cmap });
  function showDifference() {
    diffPane.label.textContent = `Difference · percentile ${state.diffA} − ${state.diffB} (predicted classes)`;
    diffPane.label.title = diffPane.label.textContent;
    $("difference-legend").hidden = !state.diff;
    $("difference-note").textContent = `${state.diffA} higher (red) · ${state.diffB} higher (blue), percentile points`;
    if (!state.diff) return;
    const url = diffUrl();
    if (diffPane.shownUrl === url) return;
    diffPane.shownUrl = url;
    if (!diffPane.viewer) {
      addToLock(open(diffPane, [first.dzi.slide, { tileSource: url, opacity: state.alpha, x: 0, y: 0, width: 1,
        success: (e) => { diffItem = e.item; } }]));
      annotations?.addViewer(diffPane.viewer);
      return;
    }
    const generation = ++diffGeneration;
    diffPane.viewer.addTiledImage({ tileSource: url, opacity: state.alpha, x: 0, y: 0, width: 1, success: (e) => {
      if (generation !== diffGeneration) { // superseded while its .dzi loaded
        diffPane.viewer.world.removeItem(e.item);
        return;
      }
      if (diffItem) diffPane.viewer.world.removeItem(diffItem);
      diffItem = e.item;
    } });
  }
  async function relayout() {
    lock.pause();
    if (!state.diff && diffPane.viewer) lock.park(diffPane.viewer);
    layout();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    lock.resume(heatmapPanes[0].viewer);
    if (state.diff && diffPane.viewer && opened.has(diffPane.viewer)) lock.setReady(diffPane.viewer);
    for (const pane of shown()) pane.scale?.update();
  }
  $("difference-colorbar").src = withQuery(first.urls.colorbar, { cmap: first.defaults.difference_cmap, width: 296, height: 14 });
  for (const [id, value] of [["difference-a", state.diffA], ["difference-b", state.diffB]]) {
    const select = $(id);
    select.replaceChildren(...names.map((n) => el("option", { value: n, textContent: n })));
    select.value = value;
    select.addEventListener("change", () => {
      const a = $("difference-a").value;
      const b = $("difference-b").value;
      if (a === b) { select.value = id === "difference-a" ? state.diffA : state.diffB; return; }
      state.diffA = a;
      state.diffB = b;
      showDifference();
      scheduleUrl();
    });
  }
  $("show-difference").checked = state.diff;
  $("show-difference").addEventListener("change", async () => {
    state.diff = $("show-difference").checked;
    await relayout();
    showDifference();
    scheduleUrl();
  });
  showDifference();

  // ---- controls ----
  const alpha = $("alpha");
  Object.assign(alpha, { min: 0, max: 1, step: first.choices.alpha.step, value: state.alpha });
  const alphaValue = $("alpha-value");
  alphaValue.textContent = state.alpha.toFixed(2);
  alpha.addEventListener("input", () => {
    state.alpha = Number(alpha.value);
    alphaValue.textContent = state.alpha.toFixed(2);
    for (const pane of heatmapPanes) pane.overlay.setAlpha(state.alpha);
    diffItem?.setOpacity(state.alpha);
    scheduleUrl();
  });
  const lockBox = $("lock-settings");
  lockBox.checked = state.locked;

  const cards = {};
  let topLists = null;
  function refresh(name) {
    const pane = heatmapPanes.find((p) => p.meta.experiment === name);
    pane.overlay.update({ ...state.panes[name], alpha: state.alpha }).catch((err) => { cards[name].error.textContent = err.message; });
    cards[name].render();
    topLists?.load(name, state.panes[name].class).catch(() => {});
    loadFigures().catch(() => {}); // of the class, scale and threshold now shown
  }
  /** Apply one setting: to its pane, or to every pane that can take it when settings are shared. */
  function set(name, key, value) {
    const targets = state.locked ? names : [name];
    const className = key === "class" ? byName[name].class_names[value] : null;
    for (const target of targets) {
      let v = value;
      if (key === "class") { // the same class by name: experiments may order their classes differently
        v = target === name ? value : byName[target].class_names.indexOf(className);
        if (!availableClasses(byName[target]).includes(v)) continue;
      }
      state.panes[target][key] = v;
      refresh(target);
    }
    scheduleUrl();
  }
  lockBox.addEventListener("change", () => {
    state.locked = lockBox.checked;
    if (state.locked) { // every pane takes the first pane's settings
      const { cmap, norm, threshold, class: cls } = state.panes[names[0]];
      for (const [key, value] of Object.entries({ cmap, norm, threshold, class: cls })) set(names[0], key, value);
    }
    scheduleUrl();
  });

  const container = $("experiment-controls");
  container.append(el("h2", { textContent: "Heatmap of each experiment" }));
  for (const meta of metas) {
    const name = meta.experiment;
    cards[name] = new ExperimentCard({ meta, pane: state.panes[name], onSet: (key, value) => set(name, key, value) });
    container.append(cards[name].element);
    cards[name].render();
    if (problems[name]) cards[name].error.textContent = problems[name];
  }

  // ---- agreement ----
  async function loadAgreement() {
    const pairs = [];
    for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) pairs.push([names[i], names[j]]);
    const bodies = await Promise.all(pairs.map(([a, b]) => getJSON(withQuery(root.dataset.agreement, { a, b }))));
    hooks.agreement = bodies;
    $("agreement-figures").replaceChildren(...bodies.map(agreementRow));
    $("agreement-figures").dataset.loaded = "true";
  }
  loadAgreement().catch((err) => { $("agreement-figures").textContent = err.message; });

  // ---- top-k lists, shared patches marked ----
  function flyTo(p) {
    const viewer = heatmapPanes[0].viewer;
    const item = viewer.world.getItemAt(0);
    lock.lead(viewer);
    const side = Math.max(p.size * 4, 512);
    viewer.viewport.fitBounds(item.imageToViewportRectangle(p.x - offX + p.size / 2 - side / 2,
      p.y - offY + p.size / 2 - side / 2, side, side));
  }
  topLists = new TopLists({ metas, element: $("topk-lists"), onPick: flyTo });
  for (const name of names) topLists.load(name, state.panes[name].class).catch(() => {});

  Object.assign(hooks, { state, metas, panes, lock, heatmapPanes, slidePane, diffPane, flushUrl, annotations, topLists,
    viewers: () => shown().map((p) => p.viewer).filter(Boolean),
    settled: () => shown().every((p) => p.viewer && opened.has(p.viewer) && !isAnimating(p.viewer)),
    fullyLoaded: () => shown().every((p) => {
      const v = p.viewer;
      if (!v || !opened.has(v) || !v.world.getItemCount()) return false;
      for (let i = 0; i < v.world.getItemCount(); i++) if (!v.world.getItemAt(i).getFullyLoaded()) return false;
      return true;
    }) });
}

main().catch((err) => {
  console.error(err);
  showStatus(`The comparison failed to start: ${err.message}`, true);
});
