// The mirrored cursor: under the pointer in one pane, a crosshair in the other pane at the same
// level-0 point, labelled with that point's score. Both ways; none in the one-pane layout.

import { getJSON, withQuery } from "./api.js";

const LOOKUP_MS = 120;

function crosshair(wrap) {
  const el = document.createElement("div");
  el.className = "mirror-cursor";
  el.hidden = true;
  el.innerHTML = '<div class="mc-h"></div><div class="mc-v"></div><span class="mc-label"></span>';
  wrap.append(el);
  return el;
}

export class MirroredCursor {
  constructor({ meta, state, left, right, offset }) {
    this.meta = meta;
    this.state = state;
    this.offset = offset;
    this.pairs = [
      { from: left, to: right, mark: crosshair(right.container.parentElement) },
      { from: right, to: left, mark: crosshair(left.container.parentElement) },
    ];
    this.last = 0;
    this.pending = null;
    this.hooks = { l0: null };
    for (const pair of this.pairs) this._bind(pair);
  }

  _bind(pair) {
    const el = pair.from.container;
    el.addEventListener("pointermove", (event) => this._move(pair, event));
    el.addEventListener("pointerleave", () => this.hide());
  }

  hide() {
    for (const p of this.pairs) p.mark.hidden = true;
  }

  _move(pair, event) {
    if (this.state.mode === "single" || !pair.from.world.getItemCount() || !pair.to.world.getItemCount()) {
      this.hide();
      return;
    }
    const rect = pair.from.container.getBoundingClientRect();
    const from = new OpenSeadragon.Point(event.clientX - rect.left, event.clientY - rect.top);
    const image = pair.from.world.getItemAt(0).viewportToImageCoordinates(pair.from.viewport.pointFromPixel(from, true));
    const l0 = { x: image.x + this.offset[0], y: image.y + this.offset[1] };
    this.hooks.l0 = l0;
    const to = pair.to.viewport.pixelFromPoint(pair.to.world.getItemAt(0).imageToViewportCoordinates(image), true);
    for (const p of this.pairs) p.mark.hidden = p !== pair;
    const mark = pair.mark;
    mark.style.transform = `translate(${Math.round(to.x)}px, ${Math.round(to.y)}px)`;
    mark.dataset.x = String(to.x);
    mark.dataset.y = String(to.y);
    this._label(mark, l0);
  }

  _label(mark, l0) {
    const now = performance.now();
    clearTimeout(this.pending);
    const ask = async () => {
      this.last = performance.now();
      const label = mark.querySelector(".mc-label");
      try {
        const body = await getJSON(withQuery(this.meta.urls.patch, { x: l0.x.toFixed(1), y: l0.y.toFixed(1), class: this.state.class }));
        label.textContent = `${body.score.toFixed(3)} · p${(100 * body.percentile).toFixed(0)}`;
      } catch {
        label.textContent = "no patch";
      }
    };
    if (now - this.last > LOOKUP_MS) ask();
    else this.pending = setTimeout(ask, LOOKUP_MS);
  }
}
