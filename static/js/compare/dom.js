// Small DOM and number helpers of the comparison page.

import { format } from "../viewer/figures.js";

/** A top-k Jaccard, or a note that k takes every unit (the figure is then 1 by construction). */
export function jaccard(body, k) {
  return k >= body.n ? `– (k ≥ all ${body.n})` : format(body.jaccard[String(k)]);
}
