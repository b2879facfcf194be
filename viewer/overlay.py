"""Overlay tiles: the attention of the patches under a Deep Zoom tile, as a palette PNG.

A tile is painted from scores alone, never from slide pixels, by the one window rasteriser
(`scoremap.raster`) that also paints the static heatmaps and the exports: per-patch scores
normalised per slide, class and normalisation, painted on the tile's raster with overlapping
patches averaged, or cut from the slide's score pyramid at coarse levels (where a tile would meet
thousands of patches), turned into palette indices and a palette PNG, index 255 fully transparent
where no patch lies.

Registration: the tile's raster is a window of its Deep Zoom level's raster, whose origin is
the level-0 corner of the slide's active area (the `limit_bounds` offset) and whose downsample
is the level's power of two (see viewer.geometry). Passing the whole level window plus the
tile's pixel offset to the rasteriser makes neighbouring tiles, and their overlap pixels, agree
exactly. At the deepest level a patch at (x, y) of size s covers exactly z pixels
[x - off_x, x - off_x + s) x [y - off_y, y - off_y + s).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from scoremap.colormap import TRANSPARENT, palette_png, to_indices
from scoremap.raster import Window, window_cells, window_indices
from viewer.geometry import DeepZoomGeometry, TileBox
from viewer.params import OverlayParams
from viewer.scores import SlideScores


@lru_cache(maxsize=64)
def transparent_png(z_w: int, z_h: int) -> bytes:
    """A fully transparent tile of this size (most tiles of a slide hold no patch)."""
    return palette_png(np.full((z_h, z_w), TRANSPARENT, np.uint8), "gray")


def tile_window(geometry: DeepZoomGeometry, box: TileBox) -> Window:
    """The tile as a window of its Deep Zoom level's raster."""
    return Window(geometry.l0_window(), box.l0_downsample, box.z_h, box.z_w, box.z_y, box.z_x)


def tile_indices(
    scores: SlideScores,
    geometry: DeepZoomGeometry,
    box: TileBox,
    params: OverlayParams,
    class_index: int,
) -> np.ndarray | None:
    """Palette indices (z_h, z_w) of one tile, or None when no patch colours it."""
    source = scores.source(class_index, params.norm, geometry, params.range)
    return window_indices(
        source, tile_window(geometry, box), threshold=params.threshold, blur=params.blur
    )


def render_overlay_tile(
    scores: SlideScores,
    geometry: DeepZoomGeometry,
    box: TileBox,
    params: OverlayParams,
    class_index: int,
) -> bytes:
    """The PNG bytes of one overlay tile (transparent where no patch lies)."""
    indices = tile_indices(scores, geometry, box, params, class_index)
    if indices is None:
        return transparent_png(box.z_w, box.z_h)
    return palette_png(indices, params.cmap)


def difference_values(
    a: SlideScores, b: SlideScores, geometry: DeepZoomGeometry, box: TileBox, blur: bool = False
) -> np.ndarray:
    """percentile(A) - percentile(B) on one tile's pixels (-1..1; NaN where either paints nothing):
    both painted by the one rasteriser on the same window, each experiment's predicted class."""
    window = tile_window(geometry, box)
    painted = [
        window_cells(s.source(s.resolve_class(None), "percentile", geometry), window, blur).expand()
        for s in (a, b)
    ]
    return painted[0].astype(np.float32) - painted[1].astype(np.float32)


def render_difference_tile(
    a: SlideScores,
    b: SlideScores,
    geometry: DeepZoomGeometry,
    box: TileBox,
    cmap: str,
    blur: bool = False,
) -> bytes:
    """The PNG of one difference tile: -1..1 onto the diverging colormap, 0 at its middle."""
    diff = difference_values(a, b, geometry, box, blur)
    if np.isnan(diff).all():
        return transparent_png(box.z_w, box.z_h)
    return palette_png(to_indices((diff + 1.0) / 2.0), cmap)
