// Pan, zoom and rotation locked across OpenSeadragon viewers, both ways, without loops or drift.
//
// Every frame in which a viewer's viewport moves, OpenSeadragon raises 'viewport-change' on it; we
// copy that viewer's *current* (animated) centre, zoom and rotation onto the others with
// `immediately = true`, so the followers track the animation frame by frame and end exactly where
// the source ends. The copy itself makes the follower raise 'viewport-change' on its next frame;
// three rules keep that echo from coming back:
//   - compare before set: a viewer already showing the source's view is left alone (the copy is
//     exact, so after one frame the two are equal and nothing more happens);
//   - a guard flag while copying;
//   - the "leader" is the viewer the user last touched (pointer, wheel, keys, navigator, buttons);
//     while the leader is still animating, other viewers' changes are its echoes and are ignored.
// The panes are the same size, and both worlds hold the slide at x = 0 with width 1, so the same
// viewport coordinates mean the same slide pixels in both.

const LEAD_EVENTS = [
  "container-enter", "canvas-press", "canvas-scroll", "canvas-drag", "canvas-key", "canvas-pinch",
  "navigator-click", "navigator-drag", "navigator-scroll",
];

/** True while the viewer's springs are moving toward their targets. */
export function isAnimating(viewer) {
  const vp = viewer.viewport;
  return !(vp.zoomSpring.isAtTargetValue() && vp.centerSpringX.isAtTargetValue() &&
           vp.centerSpringY.isAtTargetValue() && vp.degreesSpring.isAtTargetValue());
}

export class ViewportLock {
  constructor(viewers = []) {
    this.viewers = [];
    this.leader = viewers[0] ?? null;
    this.ready = new Set();
    this.paused = false;
    this._copying = false;
    for (const viewer of viewers) this.add(viewer);
  }

  /** Lock one more viewer (a pane opened later, e.g. the comparison's difference pane). */
  add(viewer) {
    this.viewers.push(viewer);
    this.leader ??= viewer;
    viewer.addHandler("viewport-change", () => this._changed(viewer));
    for (const name of LEAD_EVENTS) viewer.addHandler(name, () => { this.leader = viewer; });
  }

  /** A viewer has opened and shows its initial view: bring it to the others' view, if any. */
  setReady(viewer) {
    const other = this.viewers.find((v) => v !== viewer && this.ready.has(v));
    this.ready.add(viewer);
    if (other && !this.paused) this.copy(other, viewer);
  }

  /** A viewer that is hidden neither leads nor follows until `setReady` brings it back. */
  park(viewer) {
    this.ready.delete(viewer);
  }

  /** Make `viewer` the source of the next moves (programmatic flights, layout changes). */
  lead(viewer) {
    this.leader = viewer;
  }

  pause() {
    this.paused = true;
  }

  /** Resume locking, first bringing every other viewer to `source`'s view. */
  resume(source) {
    this.paused = false;
    this.leader = source;
    for (const viewer of this.viewers) {
      if (viewer !== source && this.ready.has(viewer)) this.copy(source, viewer);
    }
  }

  _changed(source) {
    if (this.paused || this._copying || !this.ready.has(source)) return;
    if (source !== this.leader && this.ready.has(this.leader) && isAnimating(this.leader)) return;
    for (const target of this.viewers) {
      if (target !== source && this.ready.has(target)) this.copy(source, target);
    }
  }

  /** Set `target`'s viewport to `source`'s current one, unless it already is exactly that. */
  copy(source, target) {
    const s = source.viewport;
    const t = target.viewport;
    const zoom = s.getZoom(true);
    const center = s.getCenter(true);
    const degrees = s.getRotation(true);
    const tCenter = t.getCenter(true);
    if (t.getZoom(true) === zoom && tCenter.x === center.x && tCenter.y === center.y &&
        t.getRotation(true) === degrees) {
      return; // already there: this is an echo, and setting it would stop an animation
    }
    this._copying = true;
    try {
      if (t.getRotation(true) !== degrees) t.setRotation(degrees, true);
      t.zoomTo(zoom, null, true);
      t.panTo(center, true);
    } finally {
      this._copying = false;
    }
  }
}
