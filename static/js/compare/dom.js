// Small DOM and number helpers of the comparison page.

import { format } from "../viewer/figures.js";

/** An element with properties (or attributes, or `dataset`) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/** A top-k Jaccard, or a note that k takes every unit (the figure is then 1 by construction). */
export function jaccard(body, k) {
  return k >= body.n ? `– (k ≥ all ${body.n})` : format(body.jaccard[String(k)]);
}
