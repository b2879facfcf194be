// The viewer page: two OpenSeadragon viewers, the slide on the left and the slide with the
// attention heatmap on the right, locked together; the controls, the patch lists and the
// inspector around them. Everything the page needs comes from /api/slides/<id> (data-api).
//
// Test and benchmark hooks live on `window.milViewer` (the viewers, the state, timings).

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
import { UrlMirror, initialState } from "./state.js";
import { ViewportLock, isAnimating } from "./sync.js";

const root = document.getElementById("viewer");
const statusEl = document.getElementById("pane-status");
const hooks = { ready: false, error: null, timings: { start: performance.now() } };
window.milViewer = hooks;

function showStatus(message, isError = false) {
  statusEl.hidden = !message;
  statusEl.textContent = message || "";
  statusEl.classList.toggle("error", isError);
  if (isError) hooks.error = message;
}

/** Nothing to control without a slide on show. */
function disableControls() {
  for (const el of document.querySelectorAll("#sidebar input, #sidebar select, #sidebar button, [data-mode]")) {
    el.disabled = true;
  }
}

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

async function main() {
  if (root.dataset.readable !== "true") {
    showStatus(`This slide cannot be shown: ${root.dataset.error || "unreadable"}`, true);
    disableControls();
    return;
  }
  if (!window.OpenSeadragon) {
    showStatus("OpenSeadragon is not installed: run `make install` (it runs `npm ci`) and restart the viewer.", true);
    disableControls();
    return;
  }
  let meta;
  try {
    meta = await getJSON(root.dataset.api);
  } catch (err) {
    showStatus(`Cannot load the slide: ${err.message}`, true);
    disableControls();
    return;
  }
  hooks.timings.meta = performance.now();
  const state = initialState(meta, window.location.search);
  const url = new UrlMirror(state);
  const [offX, offY] = meta.deepzoom.l0_offset;
  root.classList.toggle("mode-single", state.mode === "single");
  root.classList.toggle("mode-dual", state.mode !== "single");

  let controls = null;
  let overlay = null;
  let markRightOpened;
  const rightOpened = new Promise((resolve) => { markRightOpened = resolve; });
  let patches = null;
  let exportsMenu = null; // built once the heatmap pane exists
  let histogram = null;
  const callbacks = {
    onAlpha: () => { overlay.setAlpha(state.alpha); url.schedule(); exportsMenu?.update(); },
    onOverlay: () => {
      exportsMenu?.update();
      hooks.annotations?.scheduleFigures(); // the Dice is of the region shown
      // a heatmap asked for before the pane has opened is shown once it has
      rightOpened.then(() => overlay.update(state)).catch((err) => controls.setCmapError(err.message));
      url.schedule();
    },
    onClass: () => {
      patches.loadList();
      patches.refresh();
      histogram?.load().catch(() => {});
      hooks.annotations?.loadFigures().catch(() => {});
    },
    onScale: () => histogram?.load().catch(() => {}),
    onMode: () => setMode(),
  };
  controls = new Controls({ meta, state, ...callbacks });
  if (!meta.choices.colormaps.includes(state.cmap)) {
    const problem = await controls.checkCmap(state.cmap);
    if (problem) {
      controls.setCmapError(`${problem.split(";")[0]} in the link, showing ${meta.defaults.cmap}`);
      state.cmap = meta.defaults.cmap;
    }
  }
  controls.render();

  overlay = new OverlayLayer(meta.dzi.overlay);
  // the left pane opens once the heatmap pane has queued its tiles: the browser's few connections
  // go to the heatmap first, and the left pane's tiles (the same URLs) then mostly come from cache
  const left = OpenSeadragon(viewerOptions("slide-pane", null, root.dataset.osdImages));
  const right = OpenSeadragon(viewerOptions("overlay-pane", [meta.dzi.slide, overlay.initialSource(state)], root.dataset.osdImages, {
    showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", navigatorSizeRatio: 0.16, navigatorAutoFade: false,
    // enough tile jobs in flight that the heatmap's (cheap) tiles are asked for at once rather than
    // after the slide's; the browser runs them first (XHR, see overlay.js)
    imageLoaderLimit: 16,
  }));
  overlay.attach(right);
  exportsMenu = new ExportLinks({ meta, state, viewer: right, offset: [offX, offY] });
  hooks.exports = exportsMenu;
  histogram = new Histogram({ meta, state, onRange: () => callbacks.onOverlay() });
  hooks.histogram = histogram;
  hooks.cursor = new MirroredCursor({ meta, state, left, right, offset: [offX, offY] });
  const annotations = new AnnotationLayer({ meta, state, viewers: [left, right], offset: [offX, offY] });
  hooks.annotations = annotations;
  annotations.load().catch((err) => console.warn("annotations:", err.message));
  histogram.load().catch((err) => console.warn("histogram:", err.message));
  const lock = new ViewportLock([left, right]);
  if (state.mode === "single") lock.pause();
  Object.assign(hooks, { left, right, lock, overlay, state, meta, controls, isAnimating });

  // ---- the view <-> the state ----
  const openedViewers = new Set();
  const slideItem = (viewer) => viewer.world.getItemAt(0);

  function applyInitialView(viewer) {
    const vp = viewer.viewport;
    if (state.rotation) vp.setRotation(state.rotation, true);
    if (state.x === null) return;
    const item = slideItem(viewer);
    vp.zoomTo(item.imageToViewportZoom(state.zoom), null, true);
    vp.panTo(item.imageToViewportCoordinates(state.x - offX, state.y - offY), true);
  }

  function readView() {
    // the heatmap pane is on show in both layouts: it holds the view
    const item = slideItem(right);
    if (!item || !openedViewers.has(right)) return;
    const vp = right.viewport;
    const center = item.viewportToImageCoordinates(vp.getCenter(true));
    state.x = center.x + offX;
    state.y = center.y + offY;
    state.zoom = item.viewportToImageZoom(vp.getZoom(true));
    state.rotation = ((vp.getRotation(true) % 360) + 360) % 360;
    url.schedule();
    exportsMenu?.update();
  }

  const scaleBars = [
    new ScaleBar(document.getElementById("scalebar-slide"), left, meta.mpp),
    new ScaleBar(document.getElementById("scalebar-overlay"), right, meta.mpp),
  ];
  for (const viewer of [left, right]) {
    viewer.addHandler("open", () => {
      applyInitialView(viewer);
      openedViewers.add(viewer);
      lock.setReady(viewer);
      for (const bar of scaleBars) bar.update();
      if (openedViewers.size === 2) {
        showStatus(null);
        hooks.ready = true;
        hooks.timings.open = performance.now();
        readView();
      }
    });
    viewer.addHandler("open-failed", (event) => {
      showStatus(`Cannot open the slide: ${event.message || "tile source failed"}`, true);
    });
  }
  let leftOpening = false;
  const openLeft = () => {
    if (leftOpening) return;
    leftOpening = true;
    left.open(meta.dzi.slide);
  };
  right.addHandler("open", markRightOpened);
  right.addHandler("open", () => Promise.race([overlay.firstTile, delay(LEFT_PANE_DELAY_MS)]).then(openLeft));
  right.addHandler("open-failed", openLeft);
  right.addHandler("viewport-change", readView);
  for (const viewer of [left, right]) {
    const progressive = () => {
      if (!viewer.world.getItemCount() || !viewer.getFullyLoaded()) return;
      viewer.removeHandler("fully-loaded-change", progressive);
      for (let i = 0; i < viewer.world.getItemCount(); i++) viewer.world.getItemAt(i).immediateRender = false;
      viewer.immediateRender = false; // for heatmap layers added later
    };
    viewer.addHandler("fully-loaded-change", progressive);
  }
  right.addHandler("animation-finish", () => url.flush());

  // ---- layout ----
  async function setMode() {
    const single = state.mode === "single";
    lock.pause();
    root.classList.toggle("mode-single", single);
    root.classList.toggle("mode-dual", !single);
    controls.renderMode();
    url.schedule();
    await afterResize([left, right]);
    if (!single && state.mode === "dual") lock.resume(right);
    for (const bar of scaleBars) bar.update();
  }

  // ---- patches ----
  patches = new PatchTools({
    meta, state, left, right, lock,
    listEl: document.getElementById("patch-list"),
    tabs: Array.from(document.querySelectorAll("#patches [data-order]")),
    inspectorEl: document.getElementById("inspector"),
  });
  hooks.patches = patches;
  // the list's ten patch images wait for the heatmap's first tile: the browser's few connections
  // to the server go to tiles first
  Promise.race([overlay.firstTile, delay(1500)]).then(() => patches.loadList());

  /** True when both viewers have opened and stand still (the lock has copied the last frame). */
  hooks.settled = () => openedViewers.size === 2 && !isAnimating(left) && !isAnimating(right);
  /** True when every tiled image of the viewers on show has loaded the tiles of its view. */
  hooks.fullyLoaded = () => openedViewers.size === 2 &&
    [left, right].every((v) => {
      if (v === left && state.mode === "single") return true;
      const n = v.world.getItemCount();
      for (let i = 0; i < n; i++) if (!v.world.getItemAt(i).getFullyLoaded()) return false;
      return n > 0;
    });
  hooks.flushUrl = () => url.flush();
}

main().catch((err) => {
  console.error(err);
  showStatus(`The viewer failed to start: ${err.message}`, true);
});
