// A scale bar from the slide's microns per pixel: the longest round length (1, 2 or 5 x 10^n µm)
// that fits in `maxPx` screen pixels at the current zoom. Without MPP it says so instead.

const STEPS = [1, 2, 5];

export function niceLength(umPerScreenPx, maxPx) {
  const maxUm = umPerScreenPx * maxPx;
  let best = null;
  for (let exp = -3; exp <= 7; exp++) {
    for (const step of STEPS) {
      const um = step * 10 ** exp;
      if (um <= maxUm) best = um;
    }
  }
  return best;
}

export function formatLength(um) {
  if (um >= 1000) return `${+(um / 1000).toPrecision(3)} mm`;
  if (um >= 1) return `${+um.toPrecision(3)} µm`;
  return `${+(um * 1000).toPrecision(3)} nm`;
}

export class ScaleBar {
  constructor(element, viewer, mpp, maxPx = 130) {
    this.element = element;
    this.bar = element.querySelector(".scalebar-bar");
    this.label = element.querySelector(".scalebar-label");
    this.viewer = viewer;
    this.mpp = mpp && mpp.x ? (mpp.y ? (mpp.x + mpp.y) / 2 : mpp.x) : null;
    this.maxPx = maxPx;
    if (this.mpp === null) {
      element.classList.add("no-mpp");
      this.label.textContent = "no scale: the slide has no MPP";
      element.title = "The slide file records no microns-per-pixel, so no scale bar can be drawn";
      return;
    }
    viewer.addHandler("viewport-change", () => this.update());
    viewer.addHandler("open", () => this.update());
    viewer.addHandler("resize", () => this.update());
  }

  update() {
    if (this.mpp === null) return;
    const item = this.viewer.world.getItemAt(0);
    if (!item) return;
    const screenPxPerL0Px = item.viewportToImageZoom(this.viewer.viewport.getZoom(true));
    if (!(screenPxPerL0Px > 0)) return;
    const umPerScreenPx = this.mpp / screenPxPerL0Px;
    const um = niceLength(umPerScreenPx, this.maxPx);
    if (um === null) return;
    this.bar.style.width = `${Math.round(um / umPerScreenPx)}px`;
    this.label.textContent = formatLength(um);
  }
}
