// The comparison page: the slide and one heatmap pane per experiment (and, on demand, the
// difference of two), all locked both ways by the slide page's ViewportLock; per-pane or shared
// heatmap settings; the agreement figures and each experiment's top 10, shared patches marked.
//
// Everything comes from the API: /api/slides/<id>?exp=<name> per experiment (its defaults,
// choices and URLs, each carrying ?exp=), /api/slides/<id>/agreement for the figures.
// Test hooks live on `window.milCompare` (../page.js).

import { Page, UrlMirror, ViewState } from "../page.js";
import { AnnotationLayer } from "../viewer/annotations.js";
import { getJSON, withQuery } from "../viewer/api.js";
import { OverlayLayer } from "../viewer/overlay.js";
import { ScaleBar } from "../viewer/scalebar.js";
import { availableClasses } from "../viewer/state.js";
import { ViewportLock, isAnimating } from "../viewer/sync.js";
import { agreementRow, localizationRow } from "./figures.js";
import { el } from "../dom.js";
import { ExperimentCard } from "./cards.js";
import { Pane, grid, paneTitle, viewerOptions } from "./panes.js";
import { compareQuery, initialCompareState } from "./state.js";
import { TopLists } from "./topk.js";

const page = new Page({ rootId: "compare", hooksName: "milCompare", what: "comparison" });
const { root, hooks } = page;
const panesEl = document.getElementById("panes");
const $ = (id) => document.getElementById(id);

/** The page once every experiment's metadata is in: each step of setting it up is a method. */
class ComparePage {
  constructor(metas) {
    this.metas = metas;
    this.names = metas.map((m) => m.experiment);
    this.byName = Object.fromEntries(metas.map((m) => [m.experiment, m]));
    this.first = metas[0];
    this.offset = this.first.deepzoom.l0_offset;
    this.state = initialCompareState(metas, window.location.search);
    this.url = new UrlMirror(() => compareQuery(this.state));
    this.view = new ViewState(this.state, this.offset);
    this.problems = {}; // experiment -> what was wrong with its settings in the link
    this.cards = {};
    this.topLists = null;
    this.figuresAsked = 0;
    this.diffItem = null;
    this.diffGeneration = 0;
  }

  /** A colormap name from the link that matplotlib does not know: the pane's default, and say so. */
  async checkLinkCmaps() {
    const { metas, state } = this;
    const unknown = metas.filter((m) => !m.choices.colormaps.includes(state.panes[m.experiment].cmap));
    if (!unknown.length) return;
    const known = new Set((await getJSON(this.first.choices.colormaps_url)).all);
    for (const m of unknown) {
      const pane = state.panes[m.experiment];
      if (!known.has(pane.cmap)) {
        this.problems[m.experiment] = `unknown colormap ${pane.cmap} in the link, showing ${m.defaults.cmap}`;
        pane.cmap = m.defaults.cmap;
      }
    }
  }

  // ---- panes ----

  buildPanes() {
    const where = { container: panesEl, before: page.statusEl };
    this.slidePane = new Pane({ id: "pane-slide", title: "Slide", kind: "slide", ...where });
    this.heatmapPanes = this.metas.map((meta, i) => {
      const pane = new Pane({ id: `pane-${i}`, title: paneTitle(meta), kind: "heatmap", ...where });
      pane.wrap.dataset.experiment = meta.experiment;
      pane.overlay = new OverlayLayer(meta.dzi.overlay);
      pane.meta = meta;
      return pane;
    });
    this.diffPane = new Pane({ id: "pane-difference", title: "", kind: "difference", ...where });
    this.panes = [this.slidePane, ...this.heatmapPanes, this.diffPane];
    this.layout();
  }

  /** The panes on show: the difference pane only when asked for. */
  shown() {
    return this.panes.filter((p) => p.kind !== "difference" || this.state.diff);
  }

  layout() {
    this.diffPane.wrap.hidden = !this.state.diff;
    const { cols, rows } = grid(this.shown().length);
    panesEl.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
    panesEl.style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
  }

  /** A pane's viewer, locked to the others; the first to open shows the link's view. */
  open(pane, tileSources) {
    const { view, lock } = this;
    const viewer = OpenSeadragon(viewerOptions(pane.element, tileSources, root.dataset.osdImages));
    pane.viewer = viewer;
    pane.scale = new ScaleBar(pane.bar, viewer, this.first.mpp);
    viewer.addHandler("open", () => {
      if (!lock.viewers.some((v) => view.opened.has(v))) view.apply(viewer);
      view.opened.add(viewer);
      lock.setReady(viewer);
      pane.scale.update();
      const all = [this.slidePane, ...this.heatmapPanes].every((p) => view.opened.has(p.viewer));
      if (all && !hooks.ready) {
        page.markReady();
        this.readView(this.heatmapPanes[0].viewer);
      }
    });
    viewer.addHandler("open-failed", (e) => page.showStatus(`Cannot open the slide: ${e.message || "tile source failed"}`, true));
    viewer.addHandler("viewport-change", () => {
      // the view is read from panes on show only: a hidden difference pane is 1 px wide
      if (!this.shown().includes(pane)) return;
      if (lock.leader === viewer || !isAnimating(lock.leader)) this.readView(viewer);
    });
    viewer.addHandler("animation-finish", () => this.url.flush());
    lock.add(viewer);
    return viewer;
  }

  readView(viewer) {
    if (this.view.read(viewer)) this.url.schedule();
  }

  openPanes() {
    this.lock = new ViewportLock();
    for (const pane of this.heatmapPanes) {
      const settings = { ...this.state.panes[pane.meta.experiment], alpha: this.state.alpha };
      this.open(pane, [this.first.dzi.slide, pane.overlay.initialSource(settings)]);
      pane.overlay.attach(pane.viewer);
    }
    this.open(this.slidePane, this.first.dzi.slide);
    this.lock.leader = this.heatmapPanes[0].viewer;
  }

  // ---- ground truth: outlines on every pane, each experiment's localisation figures ----

  addGroundTruth() {
    this.annotations = new AnnotationLayer({ meta: this.first, state: null, offset: this.offset,
      viewers: [this.slidePane.viewer, ...this.heatmapPanes.map((p) => p.viewer)] });
    this.annotations.load()
      .then(() => this.loadFigures())
      .catch((err) => console.warn("annotations:", err.message));
  }

  async loadFigures() {
    if (!this.annotations.features.length) return;
    const asked = ++this.figuresAsked;
    // each experiment's figures of what its pane shows: its class and scale, the Dice of its region
    // at or above its threshold (the server's default region where none is set, as on the slide page)
    const bodies = await Promise.all(this.metas.map((m) => {
      const pane = this.state.panes[m.experiment];
      return getJSON(withQuery(m.urls.localization, { class: pane.class, norm: pane.norm,
        ...(pane.threshold > 0 ? { lo: pane.threshold.toFixed(4), hi: "1" } : {}) }));
    }));
    if (asked !== this.figuresAsked) return; // a newer request is on its way
    $("localization").replaceChildren(...bodies.flatMap((body, i) => body.classes.map((c) => localizationRow(this.names[i], c))));
    $("localization").dataset.loaded = "true";
  }

  // ---- the difference pane ----

  showDifference() {
    const { state, diffPane, first } = this;
    diffPane.label.textContent = `Difference · percentile ${state.diffA} − ${state.diffB} (predicted classes)`;
    diffPane.label.title = diffPane.label.textContent;
    $("difference-legend").hidden = !state.diff;
    $("difference-note").textContent = `${state.diffA} higher (red) · ${state.diffB} higher (blue), percentile points`;
    if (!state.diff) return;
    const url = withQuery(this.byName[state.diffA].dzi.overlay, { minus: state.diffB, cmap: first.defaults.difference_cmap });
    if (diffPane.shownUrl === url) return;
    diffPane.shownUrl = url;
    if (!diffPane.viewer) {
      this.open(diffPane, [first.dzi.slide, { tileSource: url, opacity: state.alpha, x: 0, y: 0, width: 1,
        success: (e) => { this.diffItem = e.item; } }]);
      this.annotations?.addViewer(diffPane.viewer);
      return;
    }
    const generation = ++this.diffGeneration;
    diffPane.viewer.addTiledImage({ tileSource: url, opacity: state.alpha, x: 0, y: 0, width: 1, success: (e) => {
      if (generation !== this.diffGeneration) { // superseded while its .dzi loaded
        diffPane.viewer.world.removeItem(e.item);
        return;
      }
      if (this.diffItem) diffPane.viewer.world.removeItem(this.diffItem);
      this.diffItem = e.item;
    } });
  }

  /** The grid after the difference pane comes or goes; the lock waits for the new sizes. */
  async relayout() {
    const { lock, diffPane, state } = this;
    lock.pause();
    if (!state.diff && diffPane.viewer) lock.park(diffPane.viewer);
    this.layout();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    lock.resume(this.heatmapPanes[0].viewer);
    if (state.diff && diffPane.viewer && this.view.opened.has(diffPane.viewer)) lock.setReady(diffPane.viewer);
    for (const pane of this.shown()) pane.scale?.update();
  }

  bindDifference() {
    const { state, names } = this;
    $("difference-colorbar").src = withQuery(this.first.urls.colorbar,
      { cmap: this.first.defaults.difference_cmap, width: 296, height: 14 });
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
        this.showDifference();
        this.url.schedule();
      });
    }
    $("show-difference").checked = state.diff;
    $("show-difference").addEventListener("change", async () => {
      state.diff = $("show-difference").checked;
      await this.relayout();
      this.showDifference();
      this.url.schedule();
    });
    this.showDifference();
  }

  // ---- controls ----

  bindAlpha() {
    const { state } = this;
    const alpha = $("alpha");
    Object.assign(alpha, { min: 0, max: 1, step: this.first.choices.alpha.step, value: state.alpha });
    const alphaValue = $("alpha-value");
    alphaValue.textContent = state.alpha.toFixed(2);
    alpha.addEventListener("input", () => {
      state.alpha = Number(alpha.value);
      alphaValue.textContent = state.alpha.toFixed(2);
      for (const pane of this.heatmapPanes) pane.overlay.setAlpha(state.alpha);
      this.diffItem?.setOpacity(state.alpha);
      this.url.schedule();
    });
  }

  /** One experiment's pane, card, top list and figures after its settings changed. */
  refresh(name) {
    const settings = this.state.panes[name];
    const pane = this.heatmapPanes.find((p) => p.meta.experiment === name);
    pane.overlay.update({ ...settings, alpha: this.state.alpha }).catch((err) => { this.cards[name].error.textContent = err.message; });
    this.cards[name].render();
    this.topLists?.load(name, settings.class).catch(() => {});
    this.loadFigures().catch(() => {}); // of the class, scale and threshold now shown
  }

  /** Apply one setting: to its pane, or to every pane that can take it when settings are shared. */
  set(name, key, value) {
    const { state, byName } = this;
    const targets = state.locked ? this.names : [name];
    const className = key === "class" ? byName[name].class_names[value] : null;
    for (const target of targets) {
      let v = value;
      if (key === "class") { // the same class by name: experiments may order their classes differently
        v = target === name ? value : byName[target].class_names.indexOf(className);
        if (!availableClasses(byName[target]).includes(v)) continue;
      }
      state.panes[target][key] = v;
      this.refresh(target);
    }
    this.url.schedule();
  }

  /** The shared-settings box and one card of settings per experiment. */
  buildCards() {
    const { state, names } = this;
    const lockBox = $("lock-settings");
    lockBox.checked = state.locked;
    lockBox.addEventListener("change", () => {
      state.locked = lockBox.checked;
      if (state.locked) { // every pane takes the first pane's settings
        const { cmap, norm, threshold, class: cls } = state.panes[names[0]];
        for (const [key, value] of Object.entries({ cmap, norm, threshold, class: cls })) this.set(names[0], key, value);
      }
      this.url.schedule();
    });
    const container = $("experiment-controls");
    container.append(el("h2", { textContent: "Heatmap of each experiment" }));
    for (const meta of this.metas) {
      const name = meta.experiment;
      const card = new ExperimentCard({ meta, pane: state.panes[name], onSet: (key, value) => this.set(name, key, value) });
      this.cards[name] = card;
      container.append(card.element);
      card.render();
      if (this.problems[name]) card.error.textContent = this.problems[name];
    }
  }

  // ---- agreement, top-k lists with shared patches marked ----

  async loadAgreement() {
    const { names } = this;
    const pairs = [];
    for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) pairs.push([names[i], names[j]]);
    const bodies = await Promise.all(pairs.map(([a, b]) => getJSON(withQuery(root.dataset.agreement, { a, b }))));
    hooks.agreement = bodies;
    $("agreement-figures").replaceChildren(...bodies.map(agreementRow));
    $("agreement-figures").dataset.loaded = "true";
  }

  /** Fly the panes to a patch (level-0 square), seen with some tissue around it. */
  flyTo(p) {
    const [offX, offY] = this.offset;
    const viewer = this.heatmapPanes[0].viewer;
    const item = viewer.world.getItemAt(0);
    this.lock.lead(viewer);
    const side = Math.max(p.size * 4, 512);
    viewer.viewport.fitBounds(item.imageToViewportRectangle(p.x - offX + p.size / 2 - side / 2,
      p.y - offY + p.size / 2 - side / 2, side, side));
  }

  addTopLists() {
    this.topLists = new TopLists({ metas: this.metas, element: $("topk-lists"), onPick: (p) => this.flyTo(p) });
    for (const name of this.names) this.topLists.load(name, this.state.panes[name].class).catch(() => {});
  }

  exposeHooks() {
    const { view } = this;
    const viewers = () => this.shown().map((p) => p.viewer);
    Object.assign(hooks, {
      state: this.state, metas: this.metas, panes: this.panes, lock: this.lock, heatmapPanes: this.heatmapPanes,
      slidePane: this.slidePane, diffPane: this.diffPane, annotations: this.annotations, topLists: this.topLists,
      flushUrl: () => this.url.flush(),
      viewers: () => viewers().filter(Boolean),
      settled: () => viewers().every((v) => v && view.opened.has(v) && !isAnimating(v)),
      fullyLoaded: () => view.fullyLoaded(viewers()),
    });
  }
}

const experiments = root.dataset.experiments.split(",");
page.start(() => Promise.all(experiments.map((name) => getJSON(withQuery(root.dataset.api, { exp: name })))), async (metas) => {
  const comparison = new ComparePage(metas);
  await comparison.checkLinkCmaps();
  comparison.buildPanes();
  comparison.openPanes();
  comparison.addGroundTruth();
  comparison.bindDifference();
  comparison.bindAlpha();
  comparison.buildCards();
  comparison.loadAgreement().catch((err) => { $("agreement-figures").textContent = err.message; });
  comparison.addTopLists();
  comparison.exposeHooks();
});
