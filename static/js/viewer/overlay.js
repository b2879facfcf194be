// The heatmap layer: the overlay Deep Zoom source as a second TiledImage over the slide.
//
// Its query string (cmap, class, norm, threshold, blur) goes on the .dzi URL; OpenSeadragon copies
// a .dzi's query onto every tile URL, so changing any of them means a new tiled image (new tiles).
// Opacity is the TiledImage's own, applied by the drawer from tiles already in memory: changing
// alpha never fetches anything.
//
// A new tiled image is added on top of the old one and the old one is removed once the new one
// has loaded the tiles of the current view, so the heatmap never blinks out while it changes.

// Heatmap tiles are fetched with XHR, which the browser schedules ahead of the slide's <img> tile
// requests when its few connections to the server are busy: the heatmap comes first.
const AJAX_TILES = true;

export function overlayQuery(state) {
  const q = new URLSearchParams({
    cmap: state.cmap,
    class: String(state.class),
    norm: state.norm,
    threshold: String(state.threshold),
    blur: state.blur ? "1" : "0",
  });
  if (state.lo > 0 || state.hi < 1) {
    q.set("lo", state.lo.toFixed(3));
    q.set("hi", state.hi.toFixed(3));
  }
  return q.toString();
}

/** The .dzi URL with the heatmap's query (the URL may carry a query of its own: ?exp=). */
function heatmapUrl(dziUrl, state) {
  return `${dziUrl}${dziUrl.includes("?") ? "&" : "?"}${overlayQuery(state)}`;
}

export class OverlayLayer {
  /** @param dziUrl  the overlay .dzi URL without query */
  constructor(dziUrl) {
    this.viewer = null;
    this.dziUrl = dziUrl;
    this.item = null; // the TiledImage on show
    this.url = null; // the heatmap asked for
    this.shownUrl = null; // the heatmap on show alone (any older layer dropped)
    this.alpha = 1;
    this.firstTileDrawnAt = null; // performance.now() of the first heatmap tile drawn (bench)
    this.fullyLoadedAt = null; // ... and of the first view's last heatmap tile (bench_scale)
    this._generation = 0;
    this.firstTile = new Promise((resolve) => { this._resolveFirstTile = resolve; });
  }

  /** The viewer holding the slide as world item 0 (and this layer above it). */
  attach(viewer) {
    this.viewer = viewer;
    viewer.addHandler("tile-drawn", (event) => {
      if (this.firstTileDrawnAt === null && event.tiledImage === this.item) {
        this.firstTileDrawnAt = performance.now();
        this._resolveFirstTile(this.firstTileDrawnAt);
      }
    });
  }

  /** The tile source specifier for `Viewer({tileSources: [slide, overlay.initialSource(state)]})`. */
  initialSource(state) {
    this.url = heatmapUrl(this.dziUrl, state);
    this.alpha = state.alpha;
    return {
      tileSource: this.url, opacity: state.alpha, x: 0, y: 0, width: 1, loadTilesWithAjax: AJAX_TILES,
      success: (event) => {
        this.item = event.item;
        this.shownUrl = this.url;
        const loaded = () => {
          if (!event.item.getFullyLoaded() || this.fullyLoadedAt !== null) return;
          this.fullyLoadedAt = performance.now();
          event.item.removeHandler("fully-loaded-change", loaded);
        };
        event.item.addHandler("fully-loaded-change", loaded);
      },
    };
  }

  setAlpha(alpha) {
    this.alpha = alpha;
    if (this.item) this.item.setOpacity(alpha);
  }

  /** Show the heatmap for `state`; returns a Promise that settles when it is on screen. */
  update(state) {
    const url = heatmapUrl(this.dziUrl, state);
    if (url === this.url) return Promise.resolve(this.item);
    this.url = url;
    const generation = ++this._generation;
    return new Promise((resolve, reject) => {
      this.viewer.addTiledImage({
        tileSource: url, opacity: this.alpha, x: 0, y: 0, width: 1, loadTilesWithAjax: AJAX_TILES,
        success: (event) => {
          const item = event.item;
          if (generation !== this._generation) { // superseded while its .dzi was loading
            this.viewer.world.removeItem(item);
            resolve(null);
            return;
          }
          this.item = item;
          item.setOpacity(this.alpha);
          const dropOld = () => this._dropAllBut(item, url);
          if (item.getFullyLoaded()) dropOld();
          else {
            item.addOnceHandler("fully-loaded-change", dropOld);
            setTimeout(dropOld, 4000); // never keep two layers for long
          }
          resolve(item);
        },
        error: (event) => {
          if (generation === this._generation) this.url = null;
          reject(new Error(event.message || "the heatmap could not be loaded"));
        },
      });
    });
  }

  _dropAllBut(keep, url) {
    const world = this.viewer.world;
    if (world.getIndexOfItem(keep) < 0 || keep !== this.item) return;
    this.shownUrl = url;
    for (let i = world.getItemCount() - 1; i >= 1; i--) {
      const item = world.getItemAt(i);
      if (item !== keep) world.removeItem(item);
    }
  }
}
