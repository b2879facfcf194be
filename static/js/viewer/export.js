// The Export menu: the slide on screen as the server's exports (viewer/export_routes.py), with the
// pane's colouring (colormap, class, normalisation, threshold, blur, opacity) and, for the PNG, the
// level-0 box the heatmap pane shows. Links are rebuilt as the view or the heatmap changes.

import { withQuery } from "./api.js";
import { overlayQuery } from "./overlay.js";

const $ = (id) => document.getElementById(id);

export class ExportLinks {
  constructor({ meta, state, viewer, offset }) {
    this.meta = meta;
    this.state = state;
    this.viewer = viewer;
    this.offset = offset; // the Deep Zoom image's level-0 origin (limit_bounds)
    this.el = { view: $("export-view"), regions: $("export-regions"), patches: $("export-patches"),
                threshold: $("export-threshold") };
  }

  /** The level-0 box (x, y, w, h) the pane shows, clipped to the slide. */
  viewBox() {
    const item = this.viewer.world.getItemAt(0);
    if (!item) return null;
    const rect = item.viewportToImageRectangle(this.viewer.viewport.getBounds(true));
    const [w, h] = this.meta.dimensions;
    const x0 = Math.max(0, Math.floor(rect.x + this.offset[0]));
    const y0 = Math.max(0, Math.floor(rect.y + this.offset[1]));
    const x1 = Math.min(w, Math.ceil(rect.x + rect.width + this.offset[0]));
    const y1 = Math.min(h, Math.ceil(rect.y + rect.height + this.offset[1]));
    return x1 > x0 && y1 > y0 ? { x: x0, y: y0, w: x1 - x0, h: y1 - y0 } : null;
  }

  update() {
    const q = Object.fromEntries(new URLSearchParams(overlayQuery(this.state)));
    const urls = this.meta.urls;
    const box = this.viewBox();
    if (box) {
      // the picture as wide as the pane on screen, within the sides the route accepts
      const { width_min: least, side_max: most } = this.meta.choices.export_view;
      const size = this.viewer.viewport.getContainerSize();
      const width = Math.max(least, Math.min(most, Math.round(size.x * (window.devicePixelRatio || 1))));
      const height = Math.round((box.h * width) / box.w);
      const fit = height > most ? Math.floor((most * box.w) / box.h) : width;
      this.el.view.href = withQuery(urls.export_view, { ...q, ...box, width: Math.max(least, fit), alpha: this.state.alpha });
    }
    this.el.regions.href = withQuery(urls.export_regions, q);
    this.el.patches.href = withQuery(urls.export_patches, q);
    this.el.threshold.textContent = this.state.threshold.toFixed(2);
  }
}
