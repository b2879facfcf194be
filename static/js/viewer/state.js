// The viewer's state: one plain object, mirrored to the URL's query string so that a copied link
// reopens the same view. The slide is the page's path (/slides/<id>); the rest is the query:
//
//   x, y      level-0 slide pixels at the centre of the view (the coordinates of the patch lists)
//   zoom      screen pixels per level-0 pixel (1 = full resolution), so a link means the same
//             magnification on any screen size and in either layout
//   rot       rotation in degrees
//   cmap alpha class norm threshold blur   the heatmap (class = class index)
//   lo hi     the score range of the histogram: patches outside it are not shown
//   mode      dual (slide | heatmap side by side) or single (heatmap over the slide, one pane)
//   exp       the experiment shown, where several scored the slide (the server reads it)
//
// Everything read from the URL is checked here; anything malformed falls back to the default. The
// defaults, the ranges and the words for blur are the server's (meta.defaults, meta.choices of
// /api/slides/<id>); a colormap name is the server's to check (the pages ask it).

const NUMBER = /^-?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i;

/** A finite number in [lo, hi] from the query, or null. */
export function readNumber(query, name, lo, hi) {
  const text = query.get(name);
  if (text === null || !NUMBER.test(text.trim())) return null;
  const value = Number(text);
  return Number.isFinite(value) && value >= lo && value <= hi ? value : null;
}

/** The value of the query's word for `name` in `words` (word -> value, matched in lower case, as
 *  the server reads them), or null. */
function readWord(query, name, words) {
  const text = query.get(name)?.toLowerCase();
  return text !== undefined && Object.hasOwn(words, text) ? words[text] : null;
}

/** The classes the heatmap can show (those with attention scores). */
export function availableClasses(meta) {
  return meta.classes.filter((c) => c.available).map((c) => c.index);
}

/** The view of a link (x, y, zoom, rot) where valid: the fields to set on a state. */
export function readView(q, [w, h]) {
  const view = {};
  const x = readNumber(q, "x", -w, 2 * w);
  const y = readNumber(q, "y", -h, 2 * h);
  const zoom = readNumber(q, "zoom", 1e-6, 1e3);
  if (x !== null && y !== null && zoom !== null) Object.assign(view, { x, y, zoom });
  const rot = readNumber(q, "rot", -3600, 3600);
  if (rot !== null) view.rotation = ((rot % 360) + 360) % 360;
  return view;
}

/** A link's heatmap settings (cmap, class, norm, threshold; each name after `prefix`) where valid
 *  for this slide: the fields to set on a state. The server has the last word on a colormap name
 *  (any is taken here; the page asks the server before showing one it does not offer). */
export function readHeatmap(q, meta, prefix = "") {
  const found = {};
  const cmap = q.get(`${prefix}cmap`);
  if (cmap) found.cmap = cmap;
  const cls = readNumber(q, `${prefix}class`, 0, meta.classes.length - 1);
  if (cls !== null && Number.isInteger(cls) && availableClasses(meta).includes(cls)) found.class = cls;
  const norm = q.get(`${prefix}norm`);
  if (meta.choices.norms.some((n) => n.name === norm)) found.norm = norm;
  const range = meta.choices.threshold;
  const threshold = readNumber(q, `${prefix}threshold`, range.min, range.max);
  if (threshold !== null) found.threshold = threshold;
  return found;
}

/** Write a state's view (x, y, zoom, rot) to a query. */
export function writeView(q, state) {
  if (state.x !== null && state.zoom !== null) {
    q.set("x", round(state.x, 1));
    q.set("y", round(state.y, 1));
    q.set("zoom", String(Number(state.zoom.toPrecision(7))));
  }
  if (state.rotation) q.set("rot", round(state.rotation, 2));
}

/** The state a page opens with: the URL's values where valid, else the slide's defaults. */
export function initialState(meta, search) {
  const q = new URLSearchParams(search);
  const d = meta.defaults;
  const state = {
    slide: meta.id,
    x: null, // null: the whole slide (home view)
    y: null,
    zoom: null,
    rotation: 0,
    cmap: d.cmap,
    alpha: d.alpha,
    class: d.class,
    norm: d.norm,
    threshold: d.threshold ?? 0,
    lo: 0,
    hi: 1,
    blur: Boolean(d.blur),
    mode: "dual",
    // where several experiments scored the slide, the one on show is part of the link
    experiment: (meta.experiments?.length ?? 0) > 1 ? meta.experiment : null,
  };
  Object.assign(state, readView(q, meta.dimensions), readHeatmap(q, meta));
  const alpha = readNumber(q, "alpha", 0, 1);
  if (alpha !== null) state.alpha = alpha;
  const lo = readNumber(q, "lo", 0, 1);
  const hi = readNumber(q, "hi", 0, 1);
  if (lo !== null) state.lo = lo;
  if (hi !== null) state.hi = hi;
  if (state.lo > state.hi) [state.lo, state.hi] = [0, 1];
  const blur = readWord(q, "blur", meta.choices.blur);
  if (blur !== null) state.blur = blur;
  if (["dual", "single"].includes(q.get("mode"))) state.mode = q.get("mode");
  return state;
}

export function round(value, digits) {
  return String(Number(value.toFixed(digits)));
}

/** The query string of a state (fixed order, compact numbers). */
export function stateQuery(state) {
  const q = new URLSearchParams();
  if (state.experiment) q.set("exp", state.experiment);
  writeView(q, state);
  q.set("cmap", state.cmap);
  q.set("alpha", round(state.alpha, 2));
  q.set("class", String(state.class));
  q.set("norm", state.norm);
  q.set("threshold", round(state.threshold, 2));
  if (state.lo > 0 || state.hi < 1) {
    q.set("lo", round(state.lo, 3));
    q.set("hi", round(state.hi, 3));
  }
  q.set("blur", state.blur ? "1" : "0");
  q.set("mode", state.mode);
  return q.toString();
}
