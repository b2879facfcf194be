"""The one window rasteriser: palette indices of any window of any raster of a slide's scores.

Static heatmaps (a strip of a slide level), overlay tiles (a Deep Zoom tile) and exports (a tile of
a TIFF level) all ask the same question: what colour index does each pixel of this window get?
They ask it here, with a `Window` (which raster, which part of it) and a `ScoreSource` (the bag's
normalised scores, its patch index and, where the slide has one, its score pyramid). The answer
follows the registration rule of `scoremap.grid` everywhere:

- a window of a raster that the pyramid holds (a coarse Deep Zoom level: its tiles would meet
  thousands of patches) is cut from the pyramid, so its cost follows the window, not the bag;
- any other window is painted exactly from the patches that reach it (found by the patch index),
  with overlapping patches averaged.

`blur` smooths with `grid.normalized_blur` (the Gaussian of `grid.blur_kernel`, never colouring
glass), from the patches or from the pyramid cut alike. `threshold` hides scores below it;
`transform` lets a caller remap the averaged scores before colouring (the static heatmap's
`binarize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scoremap.colormap import TRANSPARENT, to_indices
from scoremap.grid import CellGrid, blur_kernel, cell_grid, normalized_blur, rasterize_blurred
from scoremap.patch_index import PatchIndex
from scoremap.pyramid import ScorePyramid


@dataclass(frozen=True)
class Window:
    """Part of a raster: the raster's level-0 box and downsample, the part's shape and offset.

    Output pixel (row i, col j) of the whole raster covers level-0
    [x + j*d, x + (j+1)*d) x [y + i*d, y + (i+1)*d), (x, y) = `l0_window[:2]`, d = `downsample`;
    the part is rows [o_row0, o_row0 + rows) and columns [o_col0, o_col0 + cols).
    """

    l0_window: tuple[float, float, float, float]
    downsample: float
    rows: int
    cols: int
    o_row0: int = 0
    o_col0: int = 0

    @property
    def l0_box(self) -> tuple[float, float, float, float]:
        """The level-0 box (x0, y0, x1, y1) that the part's pixels cover."""
        x, y = self.l0_window[0], self.l0_window[1]
        d = self.downsample
        return (
            x + self.o_col0 * d,
            y + self.o_row0 * d,
            x + (self.o_col0 + self.cols) * d,
            y + (self.o_row0 + self.rows) * d,
        )


@dataclass(frozen=True)
class ScoreSource:
    """A bag's scores on [0, 1] (NaN: not shown) where they lie, and what speeds up reading them."""

    l0_coords: np.ndarray  # (N, 2) top-left corners, level 0
    values01: np.ndarray  # (N,) normalised scores
    l0_patch: int
    index: PatchIndex | None = None  # without one, every patch is considered for every window
    pyramid: ScorePyramid | None = None


def l0_reach(l0_patch: float, downsample: float, blur: bool) -> float:
    """How far (level 0) beyond a window a patch can still colour it: the blur's reach
    (`BlurKernel.o_reach`), and one output pixel for the edge tolerance."""
    o_reach = blur_kernel(l0_patch, downsample).o_reach if blur else 0
    return float((o_reach + 1) * downsample)


def _near(source: ScoreSource, window: Window, blur: bool) -> tuple[np.ndarray, np.ndarray]:
    if source.index is None:
        return source.l0_coords, source.values01
    x0, y0, x1, y1 = window.l0_box
    reach = l0_reach(source.l0_patch, window.downsample, blur)
    near = source.index.overlapping(x0 - reach, y0 - reach, x1 + reach, y1 + reach)
    return source.l0_coords[near], source.values01[near]


def _dense(values: np.ndarray) -> CellGrid:
    rows, cols = values.shape
    return CellGrid(np.arange(rows + 1), np.arange(cols + 1), values)


def _pyramid_cells(pyramid: ScorePyramid, l0_patch: int, window: Window, blur: bool) -> CellGrid:
    d = window.downsample
    if not blur:
        return _dense(pyramid.cut(d, window.o_row0, window.o_col0, window.rows, window.cols))
    kernel = blur_kernel(l0_patch, d)
    radius = kernel.o_radius
    halo = pyramid.cut(
        d,
        window.o_row0 - radius,
        window.o_col0 - radius,
        window.rows + 2 * radius,
        window.cols + 2 * radius,
    )
    inner = (slice(radius, radius + window.rows), slice(radius, radius + window.cols))
    smooth = np.where(
        np.isfinite(halo[inner]), normalized_blur(halo, kernel.sigma, radius)[inner], np.nan
    )
    return _dense(smooth.astype(np.float32))


def window_cells(source: ScoreSource, window: Window, blur: bool = False) -> CellGrid:
    """The averaged scores of the window's pixels (NaN where no patch lies), compressed to cells
    bounded by patch edges where painted from patches, one cell per pixel where cut or blurred."""
    pyramid = source.pyramid
    if pyramid is not None and pyramid.serves(window.downsample, window.l0_window[:2]):
        return _pyramid_cells(pyramid, source.l0_patch, window, blur)
    l0_coords, values = _near(source, window, blur)
    shape, offset = (window.rows, window.cols), (window.o_row0, window.o_col0)
    if blur:
        return _dense(
            rasterize_blurred(
                l0_coords,
                values,
                source.l0_patch,
                window.downsample,
                window.l0_window,
                shape,
                offset,
            )
        )
    return cell_grid(
        l0_coords, values, source.l0_patch, window.downsample, window.l0_window, shape, offset
    )


def window_indices(
    source: ScoreSource,
    window: Window,
    *,
    threshold: float | None = None,
    blur: bool = False,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray | None:
    """Palette indices (rows, cols) of the window, TRANSPARENT where nothing is shown; None when no
    pixel of the window is coloured (most tiles of a slide lie on glass)."""
    cells = window_cells(source, window, blur)
    g_values = cells.g_values if transform is None else transform(cells.g_values)
    if np.isnan(g_values).all():
        return None
    g_indices = to_indices(g_values, threshold if threshold else None)
    if threshold and not (g_indices != TRANSPARENT).any():
        return None
    return np.ascontiguousarray(cells.expand(g_indices))
