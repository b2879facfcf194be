// Patches: the top-k / bottom-k lists, the patch inspector (click on the slide), the outline of
// the selected patch in both panes, and flights to a patch.
//
// Coordinate planes: patches come from the API in level-0 slide pixels (l0_); the Deep Zoom image
// starts at the slide's active-area corner, so image pixels are level-0 minus deepzoom.l0_offset
// (img_); OpenSeadragon's viewport units (vp_) come from the slide TiledImage (world item 0),
// which has the same geometry in both viewers.

import { el as element } from "../dom.js";
import { getJSON, withQuery } from "./api.js";


export function formatScore(value) {
  if (value === null || value === undefined) return "—";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(3);
  return value.toPrecision(4);
}

// the API's percentile is on 0..1 (the scale of threshold and range); shown as 0..100
export function formatPercentile(value) {
  return value === null || value === undefined ? "—" : (100 * value).toFixed(1);
}

export class PatchTools {
  constructor({ meta, state, left, right, lock, listEl, tabs, inspectorEl, onSelect }) {
    this.meta = meta;
    this.state = state;
    this.viewers = [left, right];
    this.right = right;
    this.lock = lock;
    this.listEl = listEl;
    this.tabs = tabs;
    this.inspectorEl = inspectorEl;
    this.onSelect = onSelect || (() => {});
    this.order = "top";
    this.outlines = new Map(); // viewer -> outline element
    this._listGeneration = 0;
    this._inspectGeneration = 0;
    this.current = null; // {patch, kind} on show in the inspector
    const [offX, offY] = meta.deepzoom.l0_offset;
    this.l0Offset = { x: offX, y: offY };

    for (const tab of tabs) {
      tab.addEventListener("click", () => this.setOrder(tab.dataset.order));
    }
    this.outlined = null; // {patch, kind} outlined in the panes
    for (const viewer of this.viewers) {
      viewer.addHandler("open", () => {
        this.outlines.delete(viewer); // opening clears a viewer's overlays
        if (this.outlined) this.outline(this.outlined.patch, this.outlined.kind);
      });
      viewer.addHandler("canvas-click", (event) => {
        if (!event.quick) return; // a drag, not a click
        this.inspectAt(viewer, event.position);
      });
    }
  }

  // ---- coordinates ----

  slideItem(viewer) {
    return viewer.world.getItemAt(0);
  }

  /** The patch rectangle in viewport units (OpenSeadragon.Rect). */
  vpRect(viewer, patch, l0Margin = 0) {
    const img = new OpenSeadragon.Rect(
      patch.x - this.l0Offset.x - l0Margin, patch.y - this.l0Offset.y - l0Margin,
      patch.size + 2 * l0Margin, patch.size + 2 * l0Margin);
    return this.slideItem(viewer).imageToViewportRectangle(img);
  }

  // ---- lists ----

  setOrder(order) {
    if (order === this.order) return;
    this.order = order;
    for (const tab of this.tabs) {
      const on = tab.dataset.order === order;
      tab.setAttribute("aria-pressed", String(on));
      tab.setAttribute("aria-selected", String(on));
    }
    this.loadList();
  }

  async loadList() {
    const generation = ++this._listGeneration;
    const url = withQuery(this.meta.urls.topk, { class: this.state.class, order: this.order });
    this.listEl.setAttribute("aria-busy", "true");
    let body;
    try {
      body = await getJSON(url);
    } catch (err) {
      if (generation !== this._listGeneration) return;
      this.listEl.replaceChildren(element("li", { className: "list-status", textContent: `Cannot list patches: ${err.message}` }));
      this.listEl.removeAttribute("aria-busy");
      return;
    }
    if (generation !== this._listGeneration) return;
    const bagSize = body.bag_size;
    const items = body.patches.map((patch) => {
      const button = element("button", {
        type: "button", className: "patch-item",
        title: `Fly to patch #${patch.index} at (${patch.x}, ${patch.y})`,
        "data-index": String(patch.index), "data-x": String(patch.x), "data-y": String(patch.y),
        "data-size": String(patch.size), "data-rank": String(patch.rank), "data-score": String(patch.score),
      },
        element("img", { className: "thumb", src: patch.image_url, alt: "", loading: "lazy", width: 52, height: 52 }),
        element("span", {},
          element("div", { className: "score", textContent: formatScore(patch.score) }),
          element("div", { className: "rank", textContent: `rank ${patch.rank} / ${bagSize}` }),
        ),
        element("span", { className: "pct", textContent: `p${formatPercentile(patch.percentile)}` }),
      );
      button.addEventListener("click", () => {
        for (const other of this.listEl.querySelectorAll("button.selected")) other.classList.remove("selected");
        button.classList.add("selected");
        this.flyTo(patch);
        this.outline(patch, "list");
        this.show({ ...patch, bag_size: bagSize, class: body.class }, "list");
      });
      return element("li", {}, button);
    });
    if (!items.length) items.push(element("li", { className: "list-status", textContent: "No patches" }));
    this.listEl.replaceChildren(...items);
    this.listEl.removeAttribute("aria-busy");
  }

  // ---- flights and outlines ----

  /** Fly both panes to a patch (it fills about a third of the view) and outline it. */
  flyTo(patch) {
    const rect = this.vpRect(this.right, patch, patch.size);
    this.lock.lead(this.right); // the other pane follows through the lock
    this.right.viewport.fitBounds(rect, false);
  }

  outline(patch, kind) {
    this.outlined = { patch, kind };
    for (const viewer of this.viewers) {
      if (!this.slideItem(viewer)) continue; // not open yet: outlined when it opens
      const rect = this.vpRect(viewer, patch);
      let el = this.outlines.get(viewer);
      if (!el) {
        el = element("div", { className: "patch-outline" });
        this.outlines.set(viewer, el);
        viewer.addOverlay({ element: el, location: rect });
      } else {
        viewer.updateOverlay(el, rect);
      }
      el.classList.toggle("clicked", kind === "click");
      el.dataset.index = String(patch.index);
    }
  }

  clearOutline() {
    this.outlined = null;
    for (const [viewer, el] of this.outlines) viewer.removeOverlay(el);
    this.outlines.clear();
  }

  // ---- the inspector ----

  async inspectAt(viewer, position) {
    const img = this.slideItem(viewer).viewerElementToImageCoordinates(position);
    return this.inspectL0(img.x + this.l0Offset.x, img.y + this.l0Offset.y, "click");
  }

  /** Show the patch at a level-0 point (and outline it), or "no patch here". */
  async inspectL0(l0x, l0y, kind) {
    const generation = ++this._inspectGeneration;
    const url = withQuery(this.meta.urls.patch, { x: l0x.toFixed(2), y: l0y.toFixed(2), class: this.state.class });
    try {
      const patch = await getJSON(url);
      if (generation !== this._inspectGeneration) return;
      this.outline(patch, kind);
      this.show(patch, kind);
    } catch (err) {
      if (generation !== this._inspectGeneration) return;
      if (err.status === 404) this.showMiss(l0x, l0y);
      else this.showMessage(`Cannot inspect: ${err.message}`);
    }
  }

  /** The class changed: show the same patch's scores for the new class. */
  refresh() {
    if (!this.current) return;
    const { patch, kind } = this.current;
    this.inspectL0(patch.x + patch.size / 2, patch.y + patch.size / 2, kind);
  }

  show(patch, kind) {
    const el = this.inspectorEl;
    this.current = { patch, kind };
    el.className = "inspector hit";
    Object.assign(el.dataset, {
      index: String(patch.index), score: String(patch.score), percentile: String(patch.percentile),
      rank: String(patch.rank), x: String(patch.x), y: String(patch.y), size: String(patch.size), source: kind,
    });
    const row = (name, value, id) => [element("dt", { textContent: name }), element("dd", { textContent: value, id })];
    el.replaceChildren(
      element("img", { className: "thumb", src: patch.image_url, alt: `Patch ${patch.index}`, width: 96, height: 96 }),
      element("dl", {},
        ...row("Score", formatScore(patch.score), "inspect-score"),
        ...row("Percentile", formatPercentile(patch.percentile), "inspect-percentile"),
        ...row("Rank", `${patch.rank} / ${patch.bag_size ?? this.meta.bag_size}`, "inspect-rank"),
        ...row("x, y (L0)", `${patch.x}, ${patch.y}`, "inspect-coords"),
        ...row("Size", `${patch.size} px${this.meta.mpp && this.meta.mpp.x ? ` (${(patch.size * this.meta.mpp.x).toFixed(0)} µm)` : ""}`, "inspect-size"),
        ...row("Class", patch.class ? patch.class.name : this.meta.class_names[this.state.class], "inspect-class"),
      ),
    );
    this.onSelect(patch);
  }

  showMiss(l0x, l0y) {
    const el = this.inspectorEl;
    this.current = null;
    this.clearOutline();
    el.className = "inspector miss";
    for (const key of Object.keys(el.dataset)) delete el.dataset[key];
    el.dataset.miss = "true";
    el.replaceChildren(element("div", { className: "empty" },
      "No patch here", element("br"),
      element("span", { className: "num", textContent: `x ${Math.round(l0x)}, y ${Math.round(l0y)} (level 0)` }),
    ));
  }

  showMessage(text) {
    const el = this.inspectorEl;
    this.current = null;
    el.className = "inspector";
    for (const key of Object.keys(el.dataset)) delete el.dataset[key];
    el.replaceChildren(element("div", { className: "empty", textContent: text }));
  }
}
