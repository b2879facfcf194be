"""Per-patch scores painted on a raster: the registration core shared by static heatmaps and tiles.

Pure numpy/scipy (no torch, no slide I/O), so the viewer can import it.

Coordinate planes, named as openslide's deepzoom.py names them and used as variable prefixes:
    l0_  level-0 slide pixels (patch coordinates, the patch size, the rendered window)
    l_   pixels of a slide level (the static heatmap's plane)
    z_   Deep Zoom level pixels (the overlay tiles' plane)
    o_   pixels of the output raster being painted: `l_` for static heatmaps, `z_` for tiles
         (the raster has its own downsample `d` relative to level 0 and origin at the window's
         top-left corner, so output pixel (row i, col j) covers level-0
         [wx + j*d, wx + (j+1)*d) x [wy + i*d, wy + (i+1)*d))
    g_   score-grid cells: the rectangles of the output raster bounded by patch edges, inside
         which the averaged score is constant

Registration rule (SPEC §5). A patch at level-0 (x, y) with size s covers exactly
[x, x+s) x [y, y+s). On a raster of downsample d whose origin is at level-0 (wx, wy) it paints
output columns [floor((x - wx)/d), ceil((x + s - wx)/d)) and the matching rows: every output
pixel that the patch touches at all. At d = 1 that is exactly the patch's pixels; at larger d
an edge pixel that a patch only partly covers is still painted, so a patch never disappears and
colour never lies more than one output pixel outside a patch. Pixels covered by several patches
get the plain mean of their scores (CLAM's overlap averaging); pixels covered by none are NaN.

Speed. Patches come on a lattice (CLAM and TRIDENT tile the tissue with a fixed step), so the
patch edges cut the raster into few distinct rows and columns. We work on that compressed grid
(`g_` cells): a 2-D difference array accumulated with `np.bincount` and two cumulative sums
(`BoxSums`, the core's one painting kernel), and a final `np.repeat` to paint the cells onto
output pixels. Cost is O(N + cells + output pixels), independent of the patch size in pixels,
and arbitrary (non-lattice, overlapping) coordinates are handled by the same code. `rasterize`
works in row blocks so memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Tolerance on output-pixel edges, in output pixels: an edge that is mathematically an integer
# but computes as k +/- 1e-12 must not spill into a neighbouring pixel.
_EDGE_EPS = 1e-7
# Output pixels per row block in `rasterize` (float32: ~16 MB per block).
_BLOCK_PIXELS = 4 * 1024 * 1024


def o_edges(
    l0_start: np.ndarray,
    l0_patch: float,
    l0_origin: float,
    downsample: float,
    o_offset: int,
    o_len: int,
    o_limit: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Half-open output-pixel ranges [o0, o1) of patches along one axis (the registration rule).

    `o_offset` is the index of this raster's first pixel in the whole window's raster (strips
    and tiles of one big raster use the same origin, so they agree pixel for pixel); `o_limit`
    is the whole raster's pixel count on this axis (pixels past the window are never painted).
    """
    pos = (l0_start - l0_origin) / downsample
    end = (l0_start + l0_patch - l0_origin) / downsample
    o0 = np.floor(pos + _EDGE_EPS).astype(np.int64)
    o1 = np.ceil(end - _EDGE_EPS).astype(np.int64)
    # clip to the whole raster [0, o_limit), shift to this part, clip to it: one clip each
    lo = max(0, -o_offset)
    hi = max(lo, min(o_limit - o_offset, o_len))
    o0 -= o_offset
    o1 -= o_offset
    return np.clip(o0, lo, hi, out=o0), np.clip(o1, lo, hi, out=o1)


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """np.unique of an int array without its per-call overhead (every tile calls this twice)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]]


class BoxSums:
    """Sums over boxes on a grid of cells: the core's one painting kernel (cell grids, the pyramid
    off its lattice, regions).

    Box i covers rows [r0[i], r1[i]) and columns [c0[i], c1[i]) of a `shape` (rows, cols) grid
    (integers within 0 .. rows, cols). A 2-D difference array over the (rows + 1) x (cols + 1)
    corners, +w at a box's top-left and bottom-right corners and -w at the other two, accumulated
    with `np.bincount`, then two cumulative sums: O(boxes + cells), no per-box work; float64, so
    counts are exact. The corners are laid out once for any number of sums.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        r0: np.ndarray,
        r1: np.ndarray,
        c0: np.ndarray,
        c1: np.ndarray,
    ):
        self._rows, self._cols = shape
        stride = self._cols + 1
        self._corners = np.concatenate(
            (r0 * stride + c0, r1 * stride + c1, r0 * stride + c1, r1 * stride + c0)
        )
        self._signs = np.repeat(np.array([1.0, 1.0, -1.0, -1.0]), len(r0))

    def _accumulate(self, weights: np.ndarray) -> np.ndarray:
        rows, cols = self._rows, self._cols
        corners = np.bincount(self._corners, weights=weights, minlength=(rows + 1) * (cols + 1))
        summed: np.ndarray = corners.reshape(rows + 1, cols + 1)[:rows, :cols].cumsum(0).cumsum(1)
        return summed

    def count(self) -> np.ndarray:
        """How many boxes cover each cell."""
        return self._accumulate(self._signs)

    def total(self, values: np.ndarray) -> np.ndarray:
        """The sum of `values` (one per box) over the boxes covering each cell."""
        return self._accumulate(np.tile(values, 4) * self._signs)


@dataclass(frozen=True)
class CellGrid:
    """Averaged scores on the compressed grid of `g_` cells of one output raster.

    Cell (r, c) covers output rows [o_row_edges[r], o_row_edges[r+1]) and columns
    [o_col_edges[c], o_col_edges[c+1]); its value is the mean score of the patches covering it,
    NaN where none does. Keeping the grid compressed lets callers do per-pixel work (index
    mapping, colouring) on a few thousand cells and paint the result once.
    """

    o_row_edges: np.ndarray  # (ny + 1,) int64, 0 ... out height
    o_col_edges: np.ndarray  # (nx + 1,) int64, 0 ... out width
    g_values: np.ndarray  # (ny, nx) float32

    @property
    def out_shape(self) -> tuple[int, int]:
        return int(self.o_row_edges[-1]), int(self.o_col_edges[-1])

    def expand(self, g_values: np.ndarray | None = None) -> np.ndarray:
        """Paint per-cell values (default: the scores) onto the output raster, any dtype."""
        g = self.g_values if g_values is None else np.asarray(g_values)
        if g.shape != self.g_values.shape:
            raise ValueError(f"cell values must have shape {self.g_values.shape}, got {g.shape}")
        rows = np.repeat(g, np.diff(self.o_row_edges), axis=0)
        return np.repeat(rows, np.diff(self.o_col_edges), axis=1)


def cell_grid(
    l0_coords: np.ndarray,
    values: np.ndarray,
    l0_patch: float,
    downsample: float,
    l0_window: tuple[float, float, float, float],
    out_shape: tuple[int, int],
    o_offset: tuple[int, int] = (0, 0),
) -> CellGrid:
    """The `CellGrid` of patches painted on (part of) the raster of `l0_window` at `downsample`.

    `l0_window` (x, y, w, h) is the level-0 box of the whole raster: (x, y) anchors output
    pixel (0, 0), and pixels past ceil(w/d), ceil(h/d) are never painted. The raster computed
    here is `out_shape` (rows, cols) starting at pixel `o_offset` (row, col) of that whole
    raster: the static renderer passes one window and a strip's offset, so strips join exactly.
    """
    l0_coords = np.asarray(l0_coords)
    if l0_coords.ndim != 2 or l0_coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (N, 2), got {l0_coords.shape}")
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    if vals.shape[0] != l0_coords.shape[0]:
        raise ValueError(f"{vals.shape[0]} values for {l0_coords.shape[0]} coordinates")
    if not downsample > 0 or not l0_patch > 0:
        raise ValueError(
            f"downsample and patch size must be positive, got {downsample}, {l0_patch}"
        )
    o_h, o_w = int(out_shape[0]), int(out_shape[1])
    wx, wy, ww, wh = (float(v) for v in l0_window)
    o_limit_w = math.ceil(ww / downsample - _EDGE_EPS)
    o_limit_h = math.ceil(wh / downsample - _EDGE_EPS)
    l0_x = l0_coords[:, 0].astype(np.float64)
    l0_y = l0_coords[:, 1].astype(np.float64)
    ox0, ox1 = o_edges(l0_x, l0_patch, wx, downsample, int(o_offset[1]), o_w, o_limit_w)
    oy0, oy1 = o_edges(l0_y, l0_patch, wy, downsample, int(o_offset[0]), o_h, o_limit_h)
    keep = (ox1 > ox0) & (oy1 > oy0) & np.isfinite(vals)
    ox0, ox1, oy0, oy1, vals = ox0[keep], ox1[keep], oy0[keep], oy1[keep], vals[keep]

    o_col_edges = sorted_distinct(np.concatenate(([0, o_w], ox0, ox1)))
    o_row_edges = sorted_distinct(np.concatenate(([0, o_h], oy0, oy1)))
    nx, ny = len(o_col_edges) - 1, len(o_row_edges) - 1
    if vals.size == 0:
        return CellGrid(o_row_edges, o_col_edges, np.full((ny, nx), np.nan, np.float32))
    g_x0 = np.searchsorted(o_col_edges, ox0)
    g_x1 = np.searchsorted(o_col_edges, ox1)
    g_y0 = np.searchsorted(o_row_edges, oy0)
    g_y1 = np.searchsorted(o_row_edges, oy1)
    boxes = BoxSums((ny, nx), g_y0, g_y1, g_x0, g_x1)
    g_count, g_sum = boxes.count(), boxes.total(vals)
    covered = g_count > 0.5
    g_mean = np.full((ny, nx), np.nan, np.float32)
    g_mean[covered] = g_sum[covered] / g_count[covered]
    return CellGrid(o_row_edges, o_col_edges, g_mean)


def rasterize(
    l0_coords: np.ndarray,
    values: np.ndarray,
    l0_patch: int,
    downsample: float,
    l0_window: tuple[float, float, float, float],
    out_shape: tuple[int, int],
) -> np.ndarray:
    """Per-patch values painted on the raster of `l0_window` at `downsample` (float32, NaN = no patch).

    Output pixel (0, 0) is the window's top-left corner; each pixel is the mean of the values
    of the patches touching it (see the module's registration rule). Worked in row blocks, so
    arbitrary (irregular) coordinates never need more than a block's worth of cells.
    """
    o_h, o_w = int(out_shape[0]), int(out_shape[1])
    out = np.empty((o_h, o_w), np.float32)
    block = max(1, _BLOCK_PIXELS // max(1, o_w))
    for o_r0 in range(0, o_h, block):
        o_r1 = min(o_h, o_r0 + block)
        cells = cell_grid(
            l0_coords, values, l0_patch, downsample, l0_window, (o_r1 - o_r0, o_w), (o_r0, 0)
        )
        out[o_r0:o_r1] = cells.expand()
    return out


def blur_sigma(l0_patch: float, downsample: float) -> float:
    """Gaussian sigma, in output pixels, of the `blur` option: tied to the patch size.

    CLAM blurs with an OpenCV Gaussian kernel of width 2*p+1 (p = the patch size in output
    pixels) and sigma left to OpenCV, which derives 0.3*(p - 1) + 0.8 from that width; we use
    the same sigma and the same kernel half-width, so blurred heatmaps look like CLAM's at
    every level, and a tile at any zoom shows the same smoothing in slide terms.
    """
    o_patch = l0_patch / downsample
    return max(0.3 * (o_patch - 1.0) + 0.8, 0.5)


@dataclass(frozen=True)
class BlurKernel:
    """The `blur` option on a raster of one downsample: its Gaussian and the coarse lattice it runs on.

    `rasterize_blurred` blurs a raster `factor` times coarser than the output (sigma ~2 cells
    there) over the window and a halo (`coarse_span`); `o_reach` bounds, in output pixels, how
    far past a window's edge that halo reaches: how far away a patch can still colour the window.
    """

    sigma: float  # output pixels (`blur_sigma`)
    o_radius: int  # the kernel's half-width in output pixels: the patch size (CLAM's 2p + 1)
    factor: int  # output pixels per coarse cell

    @property
    def c_sigma(self) -> float:
        return self.sigma / self.factor

    @property
    def c_radius(self) -> int:
        return max(1, math.ceil(self.o_radius / self.factor))

    def coarse_span(self, c_first: float, c_last: float) -> tuple[int, int]:
        """Coarse cells [lo, hi) to blur for output pixels whose centres lie at coarse-cell
        positions c_first .. c_last: the kernel's reach and one cell of interpolation each side."""
        return math.floor(c_first) - self.c_radius - 1, math.floor(c_last) + self.c_radius + 3

    @property
    def o_reach(self) -> int:
        """Output pixels past a window's edge that its coarse span can reach: at most
        (c_radius + 2.5) * factor - 0.5 (from `coarse_span`), rounded up to whole cells."""
        return (self.c_radius + 3) * self.factor


def blur_kernel(l0_patch: float, downsample: float) -> BlurKernel:
    """The `blur` option's kernel for patches of `l0_patch` on a raster of `downsample`."""
    sigma = blur_sigma(l0_patch, downsample)
    return BlurKernel(sigma, max(1, math.ceil(l0_patch / downsample)), max(1, int(sigma // 2.0)))


def normalized_blur(raster: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """The `blur` smoothing of a raster (NaN: no patch) as a normalised convolution:
    gauss(scores * covered) / gauss(covered), so that the empty background does not drag scores
    towards zero at tissue borders; 0 where no covered pixel lies within the kernel (float32).
    Callers keep the result only where patches lie, so blurring never paints colour on glass."""
    covered = np.isfinite(raster)
    weighted = np.where(covered, raster, 0.0).astype(np.float32)
    num = ndimage.gaussian_filter(weighted, sigma, mode="constant", radius=radius)
    den = ndimage.gaussian_filter(covered.astype(np.float32), sigma, mode="constant", radius=radius)
    smooth: np.ndarray = np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    return smooth


def rasterize_blurred(
    l0_coords: np.ndarray,
    values: np.ndarray,
    l0_patch: float,
    downsample: float,
    l0_window: tuple[float, float, float, float],
    out_shape: tuple[int, int],
    o_offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Like `rasterize` (with `cell_grid`'s `o_offset`), smoothed by a Gaussian of `blur_sigma`.

    Smoothing is `normalized_blur`, kept only where patches lie (NaN elsewhere).

    A Gaussian of sigma ~0.3 patch is smooth on the scale of the patch, so when sigma exceeds
    a few output pixels we blur a raster `f` times coarser (`BlurKernel`) and interpolate
    bilinearly: the same picture, at a cost independent of the patch size. The coarse lattice
    is anchored at the window's origin and its needed extent (with a halo as wide as the kernel)
    is computed for each call, so strips and tiles of one window agree.
    """
    o_h, o_w = int(out_shape[0]), int(out_shape[1])
    if o_h <= 0 or o_w <= 0:
        return np.empty((max(o_h, 0), max(o_w, 0)), np.float32)
    o_row0, o_col0 = int(o_offset[0]), int(o_offset[1])
    kernel = blur_kernel(l0_patch, downsample)
    f = kernel.factor

    def coarse_axis(o_start: int, o_len: int) -> tuple[int, int, np.ndarray]:
        # centre of output pixel i in coarse-cell units (cell k's centre is at k)
        c_pos = (np.arange(o_start, o_start + o_len) + 0.5) / f - 0.5
        c_lo, c_hi = kernel.coarse_span(c_pos[0], c_pos[-1])
        return c_lo, c_hi, c_pos - c_lo

    c_y0, c_y1, c_py = coarse_axis(o_row0, o_h)
    c_x0, c_x1, c_px = coarse_axis(o_col0, o_w)
    coarse = cell_grid(
        l0_coords,
        values,
        l0_patch,
        downsample * f,
        l0_window,
        (c_y1 - c_y0, c_x1 - c_x0),
        (c_y0, c_x0),
    ).expand()
    smooth = normalized_blur(coarse, kernel.c_sigma, kernel.c_radius)

    def weights(c_pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i0 = np.clip(np.floor(c_pos).astype(np.int64), 0, n - 2)
        w1 = (c_pos - i0).astype(np.float32)
        return i0, i0 + 1, w1

    y0, y1, wy = weights(c_py, smooth.shape[0])
    x0, x1, wx = weights(c_px, smooth.shape[1])
    rows = smooth[y0] * (1.0 - wy)[:, None] + smooth[y1] * wy[:, None]
    out = rows[:, x0] * (1.0 - wx)[None, :] + rows[:, x1] * wx[None, :]
    support = cell_grid(
        l0_coords, values, l0_patch, downsample, l0_window, (o_h, o_w), (o_row0, o_col0)
    )
    mask = support.expand(np.isnan(support.g_values))
    out = np.ascontiguousarray(out, dtype=np.float32)
    out[mask] = np.nan
    return out
