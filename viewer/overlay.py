"""Overlay tiles: the attention of the patches under a Deep Zoom tile, as a palette PNG.

A tile is painted from scores alone, never from slide pixels, by the same path as the static
heatmaps (SPEC §5): per-patch scores normalised (`scoregrid.normalize_scores`, cached per slide,
class and normalisation), painted on the tile's raster with overlapping patches averaged
(`scoregrid.cell_grid`, or `rasterize_blurred` for `blur`), turned into palette indices and a
palette PNG (`scoring.colormap`), index 255 fully transparent where no patch lies.

Registration: the tile's raster is a window of its Deep Zoom level's raster, whose origin is
the level-0 corner of the slide's active area (the `limit_bounds` offset) and whose downsample
is the level's power of two (see viewer.geometry). Passing the whole level window plus the
tile's pixel offset to the score grid makes neighbouring tiles, and their overlap pixels, agree
exactly. At the deepest level a patch at (x, y) of size s covers exactly z pixels
[x - off_x, x - off_x + s) x [y - off_y, y - off_y + s).

Speed: only patches meeting the tile (plus the blur kernel's reach) are painted, found by
binary search (`scores.PatchIndex`); the score grid works on cells bounded by patch edges, and
the palette lookup is done per cell before painting, so a 256 x 256 tile costs a few hundred
microseconds, far less than decoding and re-encoding slide JPEGs.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from scoring.colormap import TRANSPARENT, palette_png, to_indices
from scoring.scoregrid import blur_sigma, cell_grid, rasterize_blurred
from viewer.geometry import DeepZoomGeometry, TileBox
from viewer.params import OverlayParams
from viewer.scores import SlideScores


@lru_cache(maxsize=64)
def transparent_png(z_w: int, z_h: int) -> bytes:
    """A fully transparent tile of this size (most tiles of a slide hold no patch)."""
    return palette_png(np.full((z_h, z_w), TRANSPARENT, np.uint8), "gray")


def _l0_reach(l0_patch: float, l0_downsample: float, blur: bool) -> float:
    """How far (level 0) beyond a tile a patch can still colour it: a pixel, or the blur kernel."""
    if not blur:
        return float(l0_downsample)
    sigma = blur_sigma(l0_patch, l0_downsample)  # output pixels
    coarse = max(1, int(sigma // 2.0))
    z_radius = (math.ceil(math.ceil(l0_patch / l0_downsample) / coarse) + 4) * coarse
    return float((z_radius + 2) * l0_downsample + l0_patch)


def tile_indices(scores: SlideScores, values01: np.ndarray, geometry: DeepZoomGeometry, box: TileBox,
                 threshold: float, blur: bool) -> np.ndarray | None:
    """Palette indices (z_h, z_w) of one tile, or None when no patch colours it."""
    d = box.l0_downsample
    off_x, off_y = geometry.l0_offset
    reach = _l0_reach(scores.l0_patch, d, blur)
    l0_x0 = off_x + box.z_x * d
    l0_y0 = off_y + box.z_y * d
    l0_x1 = l0_x0 + box.z_w * d
    l0_y1 = l0_y0 + box.z_h * d
    near = scores.index.overlapping(l0_x0 - reach, l0_y0 - reach, l0_x1 + reach, l0_y1 + reach)
    if near.size == 0:
        return None
    l0_coords, values = scores.l0_coords[near], values01[near]
    l0_window = geometry.l0_window()
    out_shape, z_offset = (box.z_h, box.z_w), (box.z_y, box.z_x)
    cut = threshold if threshold > 0 else None
    if blur:
        grid = rasterize_blurred(l0_coords, values, scores.l0_patch, d, l0_window, out_shape, z_offset)
        indices = to_indices(grid, cut)
    else:
        cells = cell_grid(l0_coords, values, scores.l0_patch, d, l0_window, out_shape, z_offset)
        if np.isnan(cells.g_values).all():
            return None
        indices = cells.expand(to_indices(cells.g_values, cut))
    if not (indices != TRANSPARENT).any():
        return None
    return np.ascontiguousarray(indices)


def render_overlay_tile(scores: SlideScores, geometry: DeepZoomGeometry, box: TileBox,
                        params: OverlayParams, class_index: int) -> bytes:
    """The PNG bytes of one overlay tile (transparent where no patch lies)."""
    values01 = scores.normalized(class_index, params.norm)
    indices = tile_indices(scores, values01, geometry, box, params.threshold, params.blur)
    if indices is None:
        return transparent_png(box.z_w, box.z_h)
    return palette_png(indices, params.cmap)
