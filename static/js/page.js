// The scaffold of the pages of OpenSeadragon panes, the slide page (viewer/main.js) and the
// comparison page (compare/main.js): the status line over the panes, the test and bench hooks on
// `window`, the checks before anything opens, the view of the link applied to a viewer and read
// back from it, the "fully loaded" signal tests and benches wait for, and the state mirrored to
// the URL.
//
// Hooks (`window.milViewer`, `window.milCompare`): `ready` (every pane has opened), `error` (the
// last message shown as an error), `timings` (performance.now() of `start`, `meta`, `open`),
// and what each page adds (`settled()`, `fullyLoaded()`, `flushUrl()`, its viewers).

export class Page {
  /** @param rootId    the page's root element (its data- attributes carry the API's URLs)
   *  @param hooksName the name of the hooks object on `window`
   *  @param what      the page in words, for the message when it fails to start
   *  @param onFail    called when the page cannot show the slide (e.g. disable the controls) */
  constructor({ rootId, hooksName, what, onFail = () => {} }) {
    this.root = document.getElementById(rootId);
    this.statusEl = document.getElementById("pane-status");
    this.what = what;
    this.onFail = onFail;
    this.hooks = { ready: false, error: null, timings: { start: performance.now() } };
    window[hooksName] = this.hooks;
  }

  showStatus(message, isError = false) {
    this.statusEl.hidden = !message;
    this.statusEl.textContent = message || "";
    this.statusEl.classList.toggle("error", isError);
    if (isError) this.hooks.error = message;
  }

  fail(message) {
    this.showStatus(message, true);
    this.onFail();
  }

  /** Whether the slide can be shown at all (readable, OpenSeadragon installed); else says why. */
  canOpen() {
    if (this.root.dataset.readable !== "true") {
      this.fail(`This slide cannot be shown: ${this.root.dataset.error || "unreadable"}`);
      return false;
    }
    if (!window.OpenSeadragon) {
      this.fail("OpenSeadragon is not installed: run `make install` (it runs `npm ci`) and restart the viewer.");
      return false;
    }
    return true;
  }

  /** The page's metadata from `load()` (a Promise), or null once the failure is on show. */
  async loadMeta(load) {
    try {
      const meta = await load();
      this.hooks.timings.meta = performance.now();
      return meta;
    } catch (err) {
      this.fail(`Cannot load the slide: ${err.message}`);
      return null;
    }
  }

  /** Every pane has opened: the status line goes, the hooks say so. */
  markReady() {
    this.showStatus(null);
    this.hooks.ready = true;
    this.hooks.timings.open = performance.now();
  }

  /** Start the page: when the slide can be shown, `load()` its metadata (a Promise) and
   *  `setUp(meta)`; a failure on the way is shown on the status line. */
  start(load, setUp) {
    const run = async () => {
      if (!this.canOpen()) return;
      const meta = await this.loadMeta(load);
      if (meta !== null) await setUp(meta);
    };
    run().catch((err) => {
      console.error(err);
      this.showStatus(`The ${this.what} failed to start: ${err.message}`, true);
    });
  }
}

/** The view of a state (x, y: level-0 centre, zoom: screen px per level-0 px, rotation) to and
 *  from viewers whose world item 0 is the slide; `offset` is the Deep Zoom bounds' level-0 offset. */
export class ViewState {
  constructor(state, [offX, offY]) {
    this.state = state;
    this.offX = offX;
    this.offY = offY;
    this.opened = new Set(); // the viewers that have opened their slide
  }

  /** Put the state's view (the link's; null x: the home view) on a viewer that has just opened. */
  apply(viewer) {
    const s = this.state;
    const vp = viewer.viewport;
    if (s.rotation) vp.setRotation(s.rotation, true);
    if (s.x === null) return;
    const item = viewer.world.getItemAt(0);
    vp.zoomTo(item.imageToViewportZoom(s.zoom), null, true);
    vp.panTo(item.imageToViewportCoordinates(s.x - this.offX, s.y - this.offY), true);
  }

  /** Copy an opened viewer's current view into the state; false when it has none yet. */
  read(viewer) {
    const item = viewer.world.getItemAt(0);
    if (!item || !this.opened.has(viewer)) return false;
    const s = this.state;
    const vp = viewer.viewport;
    const center = item.viewportToImageCoordinates(vp.getCenter(true));
    s.x = center.x + this.offX;
    s.y = center.y + this.offY;
    s.zoom = item.viewportToImageZoom(vp.getZoom(true));
    s.rotation = ((vp.getRotation(true) % 360) + 360) % 360;
    return true;
  }

  /** True when every one of `viewers` has opened and every tiled image in it has loaded the
   *  tiles of its view (the signal tests and benches wait for). */
  fullyLoaded(viewers) {
    return viewers.every((v) => {
      if (!v || !this.opened.has(v)) return false;
      const n = v.world.getItemCount();
      for (let i = 0; i < n; i++) if (!v.world.getItemAt(i).getFullyLoaded()) return false;
      return n > 0;
    });
  }
}

/** Writes a page's state to the address bar (replaceState: a view change is not a history
 *  entry), at most every `delayMs` while the view keeps moving. `query()` is the state's query. */
export class UrlMirror {
  constructor(query, delayMs = 250) {
    this.query = query;
    this.delayMs = delayMs;
    this.timer = null;
  }

  schedule() {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => this.flush(), this.delayMs);
  }

  flush() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const search = "?" + this.query();
    if (search !== window.location.search) {
      window.history.replaceState(null, "", window.location.pathname + search + window.location.hash);
    }
  }
}
