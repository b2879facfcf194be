// The viewer page: two OpenSeadragon viewers, the slide on the left and the slide with the
// attention heatmap on the right, locked together; the controls, the patch lists and the
// inspector around them. Everything the page needs comes from /api/slides/<id> (data-api).
//
// Test and benchmark hooks live on `window.milViewer` (the viewers, the state, timings; ../page.js).

import { Page, UrlMirror, ViewState } from "../page.js";
import { getJSON } from "./api.js";
import { ExportLinks } from "./export.js";
import { Histogram } from "./histogram.js";
import { MirroredCursor } from "./cursor.js";
import { AnnotationLayer } from "./annotations.js";
import { Controls } from "./controls.js";
import { OverlayLayer } from "./overlay.js";
import { viewerOptions } from "./osd.js";
import { PatchTools } from "./patches.js";
import { ScaleBar } from "./scalebar.js";
import { initialState, stateQuery } from "./state.js";
import { ViewportLock, isAnimating } from "./sync.js";

/** Nothing to control without a slide on show. */
function disableControls() {
  for (const el of document.querySelectorAll("#sidebar input, #sidebar select, #sidebar button, [data-mode]")) {
    el.disabled = true;
  }
}

const page = new Page({ rootId: "viewer", hooksName: "milViewer", what: "viewer", onFail: disableControls });
const { root, hooks } = page;

const LEFT_PANE_DELAY_MS = 400;
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until OpenSeadragon has seen the panes' new sizes (it checks once per frame). */
function afterResize(viewers, maxFrames = 30) {
  return new Promise((resolve) => {
    let frames = 0;
    const tick = () => {
      frames += 1;
      const settled = viewers.every((v) => {
        const size = v.viewport.getContainerSize();
        const el = v.container;
        return size.x === Math.max(1, el.clientWidth) && size.y === Math.max(1, el.clientHeight);
      });
      if ((settled && frames >= 2) || frames >= maxFrames) resolve();
      else requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}

/** The page once its metadata is in: each step of setting it up is a method, in order. */
class SlidePage {
  constructor(meta) {
    this.meta = meta;
    this.state = initialState(meta, window.location.search);
    this.offset = meta.deepzoom.l0_offset;
    this.url = new UrlMirror(() => stateQuery(this.state));
    this.view = new ViewState(this.state, this.offset);
    this.rightOpened = new Promise((resolve) => { this.markRightOpened = resolve; });
    // built once the heatmap pane exists; the controls' callbacks may come first
    this.exportsMenu = null;
    this.histogram = null;
    this.annotations = null;
    root.classList.toggle("mode-single", this.state.mode === "single");
    root.classList.toggle("mode-dual", this.state.mode !== "single");
  }

  /** A new heatmap asked for (colormap, class, scale, threshold, blur, range). */
  overlayChanged() {
    this.exportsMenu?.update();
    this.annotations?.scheduleFigures(); // the Dice is of the region shown
    // a heatmap asked for before the pane has opened is shown once it has
    this.rightOpened.then(() => this.overlay.update(this.state)).catch((err) => this.controls.setCmapError(err.message));
    this.url.schedule();
  }

  /** The sidebar's controls, a colormap of the link the server does not know replaced. */
  async buildControls() {
    const { meta, state } = this;
    this.controls = new Controls({
      meta, state,
      onAlpha: () => { this.overlay.setAlpha(state.alpha); this.url.schedule(); this.exportsMenu?.update(); },
      onOverlay: () => this.overlayChanged(),
      onClass: () => {
        this.patches.loadList();
        this.patches.refresh();
        this.histogram?.load().catch(() => {});
        this.annotations?.loadFigures().catch(() => {});
      },
      onScale: () => this.histogram?.load().catch(() => {}),
      onMode: () => this.setMode(),
    });
    if (!meta.choices.colormaps.includes(state.cmap)) {
      const problem = await this.controls.checkCmap(state.cmap);
      if (problem) {
        this.controls.setCmapError(`${problem.split(";")[0]} in the link, showing ${meta.defaults.cmap}`);
        state.cmap = meta.defaults.cmap;
      }
    }
    this.controls.render();
  }

  /** The two viewers: the heatmap pane (right) opens first, the slide pane once it has queued
   *  its tiles (see `watchOpening`). */
  openPanes() {
    const { meta, state } = this;
    this.overlay = new OverlayLayer(meta.dzi.overlay);
    const images = root.dataset.osdImages;
    this.left = OpenSeadragon(viewerOptions("slide-pane", null, images));
    this.right = OpenSeadragon(viewerOptions("overlay-pane", [meta.dzi.slide, this.overlay.initialSource(state)], images, {
      showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", navigatorSizeRatio: 0.16, navigatorAutoFade: false,
      // enough tile jobs in flight that the heatmap's (cheap) tiles are asked for at once rather than
      // after the slide's; the browser runs them first (XHR, see overlay.js)
      imageLoaderLimit: 16,
    }));
    this.overlay.attach(this.right);
    this.lock = new ViewportLock([this.left, this.right]);
    if (state.mode === "single") this.lock.pause();
    this.scaleBars = [
      new ScaleBar(document.getElementById("scalebar-slide"), this.left, meta.mpp),
      new ScaleBar(document.getElementById("scalebar-overlay"), this.right, meta.mpp),
    ];
  }

  /** What draws on or reads the panes: exports, histogram, mirrored cursor, annotations. */
  addTools() {
    const { meta, state, left, right, offset } = this;
    this.exportsMenu = new ExportLinks({ meta, state, viewer: right, offset });
    this.histogram = new Histogram({ meta, state, onRange: () => this.overlayChanged() });
    hooks.cursor = new MirroredCursor({ meta, state, left, right, offset });
    this.annotations = new AnnotationLayer({ meta, state, viewers: [left, right], offset });
    this.annotations.load().catch((err) => console.warn("annotations:", err.message));
    this.histogram.load().catch((err) => console.warn("histogram:", err.message));
  }

  /** The heatmap pane holds the view in both layouts: the state follows it. */
  readView() {
    if (!this.view.read(this.right)) return;
    this.url.schedule();
    this.exportsMenu?.update();
  }

  /** Each pane shows the link's view when it opens; the page is ready when both have. */
  watchOpening() {
    const { left, right, view } = this;
    for (const viewer of [left, right]) {
      viewer.addHandler("open", () => {
        view.apply(viewer);
        view.opened.add(viewer);
        this.lock.setReady(viewer);
        for (const bar of this.scaleBars) bar.update();
        if (view.opened.size === 2) {
          page.markReady();
          this.readView();
        }
      });
      viewer.addHandler("open-failed", (event) => {
        page.showStatus(`Cannot open the slide: ${event.message || "tile source failed"}`, true);
      });
      this.renderProgressivelyOnceLoaded(viewer);
    }
    // the left pane opens once the heatmap pane has queued its tiles: the browser's few connections
    // go to the heatmap first, and the left pane's tiles (the same URLs) then mostly come from cache
    let leftOpening = false;
    const openLeft = () => {
      if (leftOpening) return;
      leftOpening = true;
      left.open(this.meta.dzi.slide);
    };
    right.addHandler("open", this.markRightOpened);
    right.addHandler("open", () => Promise.race([this.overlay.firstTile, delay(LEFT_PANE_DELAY_MS)]).then(openLeft));
    right.addHandler("open-failed", openLeft);
    right.addHandler("viewport-change", () => this.readView());
    right.addHandler("animation-finish", () => this.url.flush());
  }

  /** The first view renders its own level only (osd.js); after that, progressive. */
  renderProgressivelyOnceLoaded(viewer) {
    const progressive = () => {
      if (!viewer.world.getItemCount() || !viewer.getFullyLoaded()) return;
      viewer.removeHandler("fully-loaded-change", progressive);
      for (let i = 0; i < viewer.world.getItemCount(); i++) viewer.world.getItemAt(i).immediateRender = false;
      viewer.immediateRender = false; // for heatmap layers added later
    };
    viewer.addHandler("fully-loaded-change", progressive);
  }

  /** Side by side or overlay only (the state's `mode`). */
  async setMode() {
    const single = this.state.mode === "single";
    this.lock.pause();
    root.classList.toggle("mode-single", single);
    root.classList.toggle("mode-dual", !single);
    this.controls.renderMode();
    this.url.schedule();
    await afterResize([this.left, this.right]);
    if (!single && this.state.mode === "dual") this.lock.resume(this.right);
    for (const bar of this.scaleBars) bar.update();
  }

  /** The top and bottom lists and the inspector. */
  addPatches() {
    const { meta, state, left, right, lock } = this;
    this.patches = new PatchTools({
      meta, state, left, right, lock,
      listEl: document.getElementById("patch-list"),
      tabs: Array.from(document.querySelectorAll("#patches [data-order]")),
      inspectorEl: document.getElementById("inspector"),
    });
    // the list's ten patch images wait for the heatmap's first tile: the browser's few connections
    // to the server go to tiles first
    Promise.race([this.overlay.firstTile, delay(1500)]).then(() => this.patches.loadList());
  }

  exposeHooks() {
    const { left, right, state, view } = this;
    const shown = () => (state.mode === "single" ? [right] : [left, right]);
    Object.assign(hooks, {
      left, right, state, meta: this.meta, lock: this.lock, overlay: this.overlay, controls: this.controls,
      exports: this.exportsMenu, histogram: this.histogram, annotations: this.annotations, patches: this.patches,
      isAnimating,
      /** True when both viewers have opened and stand still (the lock has copied the last frame). */
      settled: () => view.opened.size === 2 && !isAnimating(left) && !isAnimating(right),
      /** True when every tiled image of the viewers on show has loaded the tiles of its view. */
      fullyLoaded: () => view.opened.size === 2 && view.fullyLoaded(shown()),
      flushUrl: () => this.url.flush(),
    });
  }
}

page.start(() => getJSON(root.dataset.api), async (meta) => {
  const slidePage = new SlidePage(meta);
  await slidePage.buildControls();
  slidePage.openPanes();
  slidePage.addTools();
  slidePage.watchOpening();
  slidePage.addPatches();
  slidePage.exposeHooks();
});
