// Each experiment's top 10, with a star on the patches that lie on another experiment's top 10:
// two models looking at the same tissue, whatever their grids (same coordinates, or overlapping
// squares of other sizes).

import { fillUrl, getJSON, withQuery } from "../viewer/api.js";
import { el } from "../dom.js";

const overlaps = (p, q) => p.x < q.x + q.size && q.x < p.x + p.size && p.y < q.y + q.size && q.y < p.y + p.size;

export class TopLists {
  constructor({ metas, element, onPick }) {
    this.metas = Object.fromEntries(metas.map((m) => [m.experiment, m]));
    this.names = metas.map((m) => m.experiment);
    this.onPick = onPick;
    this.patches = {};
    this.asked = {}; // experiment -> number of its latest request
    this.lists = Object.fromEntries(this.names.map((name) => {
      const list = el("ol", { className: "patch-list compact", dataset: { experiment: name } });
      element.append(el("div", { className: "topk-block" }, el("h3", { textContent: name }), list));
      return [name, list];
    }));
  }

  /** Ask for experiment `name`'s top patches of a class; the latest request of each experiment
   *  wins (an older answer arriving after a newer one is dropped). */
  async load(name, classIndex) {
    const asked = (this.asked[name] ?? 0) + 1;
    this.asked[name] = asked;
    const body = await getJSON(withQuery(this.metas[name].urls.topk, { class: classIndex }));
    if (asked !== this.asked[name]) return; // a newer request is on its way
    this.patches[name] = body.patches;
    this.render();
  }

  /** Whether patch `p` of experiment `name` lies on a top patch of another experiment. */
  shared(name, p) {
    return this.names.some((other) => other !== name && (this.patches[other] || []).some((q) => overlaps(p, q)));
  }

  render() {
    for (const name of this.names) {
      if (!this.patches[name]) continue;
      this.lists[name].replaceChildren(...this.patches[name].map((p) => {
        const shared = this.shared(name, p);
        const item = el("li", { className: `patch-item${shared ? " shared" : ""}`, dataset: { index: p.index, shared } },
          el("img", { src: fillUrl(this.metas[name].urls.patch_image, { index: p.index }), alt: "", width: 40, height: 40,
            loading: "lazy" }),
          el("span", { textContent: `#${p.rank} · ${(100 * p.percentile).toFixed(1)} %${shared ? " ★" : ""}` }));
        item.addEventListener("click", () => this.onPick(p));
        return item;
      }));
    }
  }
}
