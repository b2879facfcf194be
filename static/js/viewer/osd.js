// The OpenSeadragon options every pane of the viewer shares (the slide page's two panes, the
// comparison page's several): one place, so panes locked together behave alike.

/** Options of one pane; `extra` adds or overrides (a navigator, no buttons, ...). */
export function viewerOptions(element, tileSources, prefixUrl, extra = {}) {
  return {
    element,
    tileSources,
    prefixUrl,
    drawer: "canvas", // predictable pixels (and screenshots) with or without a GPU
    crossOriginPolicy: false,
    showNavigator: false,
    showRotationControl: true,
    showFullPageControl: false,
    navigationControlAnchor: OpenSeadragon.ControlAnchor.TOP_RIGHT,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: false },
    gestureSettingsTouch: { pinchRotate: true },
    preserveImageSizeOnResize: true, // the layout toggle keeps the magnification
    animationTime: 0.5,
    blendTime: 0.1,
    zoomPerScroll: 1.4,
    maxZoomPixelRatio: 2,
    minZoomImageRatio: 0.5,
    visibilityRatio: 0.3,
    imageLoaderLimit: 8,
    // the first view loads its own level only (no blurry low levels first: fewer requests, and
    // low levels are the costly ones on slides without a pyramid); progressive after that
    immediateRender: true,
    timeout: 60000,
    ...extra,
  };
}
