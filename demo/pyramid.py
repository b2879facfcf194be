"""Large pyramidal slides quilted from real tissue, for the demo, the tests and the benchmarks.

No public whole-slide image of tens of thousands of pixels a side is small enough to ship, so we
build one from a real H&E crop: a quilt of 256-px cells, each a window of the crop cross-faded
into its neighbours, laid inside a few smooth tissue "islands" on a scanner-white background,
and written as a tiled JPEG TIFF pyramid that OpenSlide opens (Aperio .svs or generic tiled TIFF).

What it should look like: continuous tissue at every zoom (no block edges, no checkerboard), and
at the overview regions of nuclei-dense tissue many patches wide, graded into stroma, so that a
model attending to nuclei draws coherent hot and cold areas, as on a real slide. Each cell picks
its window by nuclei density (measured as demo.features measures patches), following a smooth
layout of dense regions over a stroma background; orientations change in stretches, not per cell.

Design choices, for speed and bounded memory on a 2-core machine:
- Level 0 is rendered tile by tile (a few numpy copies and cross-fades per tile) on a thread
  pool, a tile row ahead; nothing the size of the slide is ever held.
- Levels 1, 2, ... are 2x2 box means of the level above, built a tile row (band) at a time as
  level 0 streams past: exactly what a scanner pyramid holds, in one band per level of memory.
  Their JPEG tiles wait in a temporary file until the writer reaches them (TIFF order).
- The layout (islands, targets, windows, orientations) comes from
  `numpy.random.default_rng(seed)`: the same arguments give byte-identical files.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import imagecodecs
import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from scoremap.atomic import atomic_output

MAX_TOP_LEVEL_SIDE = 1000  # keep halving until the smallest level's longest side is below this
RIM = 1200  # level-0 px over which nuclei-dense regions fade into stroma


# ----------------------------------------------------------------------------------------------
# the tissue source


def tissue_source(slide_path: str | os.PathLike, size: int = 2048, *, prefer: str = "tissue") -> np.ndarray:
    """A `size` x `size` RGB uint8 crop of a real scan, placed where it holds the most tissue.

    The crop is the raw material of every synthetic slide, so it should be mostly tissue (the
    mosaic adds its own background). Windows are scored on a low-resolution image with
    summed-area tables: `prefer="tissue"` maximises stained area; `prefer="stroma"` maximises
    stained area with few nuclei (haematoxylin-dense pixels count three times against), giving
    a slide whose tissue is mostly eosin-rich stroma. The crop is clipped to smaller slides.
    """
    import openslide

    from demo.features import NUCLEI_H, UNMIX, _OD_LUT
    from demo.patches import read_low_res

    if prefer not in ("tissue", "stroma"):
        raise ValueError(f"prefer must be 'tissue' or 'stroma', got {prefer!r}")
    with openslide.OpenSlide(str(slide_path)) as slide:
        width, height = slide.dimensions
        cw, ch = min(size, width), min(size, height)
        thumb, sx, sy = read_low_res(slide, 8.0)
        lh, lw = thumb.shape[:2]
        kw, kh = max(1, int(round(cw / sx))), max(1, int(round(ch / sy)))
        kw, kh = min(kw, lw), min(kh, lh)

        def window_mean(m: np.ndarray) -> np.ndarray:
            sat = np.pad(m.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            return (sat[kh:, kw:] - sat[:-kh, kw:] - sat[kh:, :-kw] + sat[:-kh, :-kw]) / (kw * kh)

        score = window_mean(_saturation_mask(thumb))
        if prefer == "stroma":
            hem = (_OD_LUT[thumb] @ UNMIX)[..., 0]
            score = score - 3.0 * window_mean(hem > NUCLEI_H)
        # ties (several full windows) resolve towards the slide centre, deterministically
        yy, xx = np.mgrid[0:score.shape[0], 0:score.shape[1]]
        centre = -((yy - (score.shape[0] - 1) / 2) ** 2 + (xx - (score.shape[1] - 1) / 2) ** 2)
        best = np.lexsort((centre.ravel(), np.round(score.ravel(), 6)))[-1]
        by, bx = np.unravel_index(best, score.shape)
        x0 = int(min(max(0, round(bx * sx)), width - cw))
        y0 = int(min(max(0, round(by * sy)), height - ch))
        crop = slide.read_region((x0, y0), 0, (cw, ch)).convert("RGB")
    return np.ascontiguousarray(np.asarray(crop, dtype=np.uint8))


def _saturation_mask(rgb: np.ndarray, threshold: float = 0.08) -> np.ndarray:
    """Stained tissue is saturated (pink/purple); glass is near-grey, whatever its brightness."""
    # channel-wise maximum/minimum of planes: reducing over a trailing axis of 3 is slow in numpy
    mx = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).astype(np.float32)
    mn = np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).astype(np.float32)
    return ((mx - mn) / np.maximum(mx, 1.0) > threshold) & (mx > 30)


def background_colour(source: np.ndarray) -> tuple[int, int, int]:
    """The glass colour of the scan the crop came from (median of bright grey pixels).

    Using the scan's own background keeps the mosaic's background and the white holes inside the
    tissue blocks the same colour, so block edges in empty areas are invisible.
    """
    flat = source[::4, ::4].reshape(-1, 3)
    mx = flat.max(axis=1).astype(np.int16)
    mn = flat.min(axis=1).astype(np.int16)
    glass = flat[(mx > 200) & (mx - mn < 15)]
    if len(glass) < 50:
        return (244, 242, 242)
    return tuple(int(v) for v in np.median(glass, axis=0))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# layout


def level_dimensions(width: int, height: int) -> list[tuple[int, int]]:
    """Level sizes at downsamples 1, 2, 4, ... until the longest side is below ~1000 px."""
    dims = [(width, height)]
    while max(dims[-1]) > MAX_TOP_LEVEL_SIDE:
        k = len(dims)
        dims.append((-(-width >> k), -(-height >> k)))
    return dims


def _turned(crops: tuple[np.ndarray, np.ndarray], oy: int, ox: int, side: int, turn: int) -> np.ndarray:
    """The `side` square at (oy, ox) of the crop, as is, flipped, transposed or rotated (a view).

    `crops` holds the crop and its transpose, both C-contiguous; turn bit 1 picks the transpose,
    bit 0 flips rows. Those four orientations are views whose rows stay contiguous, so copying
    out of them runs at memcpy speed (a column flip or a transposed view is ~40x slower).
    """
    view = crops[1][ox:ox + side, oy:oy + side] if turn & 2 else crops[0][oy:oy + side, ox:ox + side]
    return view[::-1] if turn & 1 else view


def _taper(u: np.ndarray) -> np.ndarray:
    """0 within 3% of a border, 1 beyond 12%: keeps a glass margin (a factor of each axis, so
    the island field stays a sum of separable terms)."""
    t = np.clip((np.minimum(u, 1.0 - u) - 0.03) / 0.09, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class _Layout:
    """Where tissue goes and what it shows.

    Islands: a sum of separable Gaussians, thresholded (tissue where the field is high, glass
    elsewhere). Quilt: cells between the grid lines `xb`, `yb`, each showing a `window`-px
    square of the crop (origin and orientation per cell) that reaches `overlap` px past its
    borders; across every border the two cells are cross-faded, so the tissue is continuous.
    """

    width: int
    height: int
    xb: np.ndarray  # (ncx + 1,) level-0 x of the cell borders, increasing
    yb: np.ndarray  # (ncy + 1,) level-0 y of the cell borders
    overlap: int  # half-width of the cross-fade around every cell border, level 0
    window: int  # side of every cell's crop window: the cell and an overlap each side
    origins: np.ndarray  # (ncy, ncx, 2) crop-window origin (y, x), multiples of 32
    turns: np.ndarray  # (ncy, ncx) orientation 0..3 (see _turned)
    target: np.ndarray  # (ncy, ncx) rank of the cell's window by nuclei density, in [0, 1]
    cx: np.ndarray
    cy: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    amp: np.ndarray
    threshold: float = 0.0
    softness: float = 1.0  # field units over which the blend goes 0 -> 1

    def gx(self, xs: np.ndarray) -> np.ndarray:
        """(n_blobs, len(xs)) horizontal factors of the island field at level-0 x positions."""
        g = np.exp(-0.5 * ((xs[None, :] - self.cx[:, None]) / self.sx[:, None]) ** 2)
        return g * self.amp[:, None] * _taper(xs / self.width)[None, :]

    def gy(self, ys: np.ndarray) -> np.ndarray:
        """(n_blobs, len(ys)) vertical factors of the island field at level-0 y positions."""
        g = np.exp(-0.5 * ((ys[None, :] - self.cy[:, None]) / self.sy[:, None]) ** 2)
        return g * _taper(ys / self.height)[None, :]

    def weight(self, field: np.ndarray) -> np.ndarray:
        """Blend weight of tissue (1) over glass (0) for island-field values."""
        return np.clip((field - self.threshold) / self.softness + 0.5, 0.0, 1.0)


def window_pool(source: np.ndarray, window: int,
                step: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate `window`-px squares of the crop, sparsest first: (N, 2) origins (y, x), their
    nuclei densities, and how unevenly the nuclei spread over each (the standard deviation of
    the density of its 64-px parts).

    Measured as demo.features measures patches (4x-reduced pixels, haematoxylin-dense fraction),
    so a cell's window predicts the nuclei fraction the model will see there. Only windows that
    are nearly all tissue are kept (the islands, not holes in the crop, decide where glass is).
    """
    from demo.features import NUCLEI_H, TISSUE_OD, UNMIX, _OD_LUT

    h4, w4 = source.shape[0] // 4, source.shape[1] // 4
    small = source[:h4 * 4, :w4 * 4].reshape(h4, 4, w4, 4, 3).mean((1, 3), dtype=np.float32)
    od = _OD_LUT[(small + 0.5).astype(np.uint8)]
    stained = od.sum(-1) > TISSUE_OD
    nuclei = ((od @ UNMIX[:, 0]) > NUCLEI_H) & stained

    k, s = max(1, window // 4), max(1, step // 4)

    def window_mean(m: np.ndarray) -> np.ndarray:
        sat = np.pad(m.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        ys = np.arange(0, m.shape[0] - k + 1, s)[:, None]
        xs = np.arange(0, m.shape[1] - k + 1, s)[None, :]
        return (sat[ys + k, xs + k] - sat[ys, xs + k] - sat[ys + k, xs] + sat[ys, xs]) / (k * k)

    tissue, density = window_mean(stained).ravel(), window_mean(nuclei).ravel()
    # how unevenly the nuclei spread over the window: the spread of their 64-px density
    local = ndimage.uniform_filter(nuclei.astype(np.float64), 16, mode="nearest")
    uneven = np.sqrt(np.maximum(window_mean(local ** 2).ravel() - window_mean(local).ravel() ** 2, 0))
    ny, nx = (h4 - k) // s + 1, (w4 - k) // s + 1
    origins = np.stack(np.unravel_index(np.arange(ny * nx), (ny, nx)), -1).astype(np.int64) * step
    keep = tissue >= 0.9
    if keep.sum() < 8:  # a crop with little solid tissue: its most solid quarter
        keep = tissue >= np.quantile(tissue, 0.75)
    order = np.argsort(density[keep], kind="stable")
    return origins[keep][order], density[keep][order], uneven[keep][order]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), max(1.0, sigma), mode="wrap")
    return noise / max(float(noise.std()), 1e-12)


def _make_layout(source: np.ndarray, width: int, height: int, cell: int, seed: int,
                 tissue_area: float, dense_area: float, extent: tuple[int, int]) -> _Layout:
    """Deterministic islands covering about `tissue_area` of the slide, and the quilt's cells.

    Islands come in 2-3 groups of blobs (like several sections on one glass slide) and fade out
    towards the border. Each cell has a target: the rank, from sparsest (0) to densest (1), of
    the crop window it shows. Targets follow a smooth background of more and fewer nuclei over
    the lower fifth of the ranks (stroma), under a few nuclei-dense regions with ragged outlines,
    `dense_area` of the tissue and many patches wide, whose cells draw the densest windows and
    whose rim grades into the stroma over ~RIM px. With `dense_area` 0 the background spans all
    the crop's windows (pass a stroma crop for a slide with few nuclei).
    """
    rng = np.random.default_rng(seed)
    overlap = cell // 8
    # cell borders every `cell` px (on tile borders when cell = tile: the fewest cross-fades
    # per tile), covering `extent`: the slide padded to whole tiles
    xb, yb = (np.arange(-(-e // cell) + 2, dtype=np.int64) * cell for e in extent)
    ncx, ncy = len(xb) - 1, len(yb) - 1

    groups = int(rng.integers(2, 4))
    centres = rng.uniform(0.25, 0.75, size=(groups, 2))
    if groups > 1:  # spread the groups out so they read as separate sections
        order = np.argsort(centres[:, 0] if width >= height else centres[:, 1])
        span = np.linspace(0.25, 0.75, groups)
        axis = 0 if width >= height else 1
        centres[order, axis] = span
    cx, cy, sx, sy = [], [], [], []
    for gx_, gy_ in centres:
        for _ in range(int(rng.integers(2, 5))):
            cx.append((gx_ + rng.normal(0, 0.05)) * width)
            cy.append((gy_ + rng.normal(0, 0.07)) * height)
            sx.append(rng.uniform(0.04, 0.09) * width / max(1, groups - 1) ** 0.5)
            sy.append(rng.uniform(0.06, 0.12) * height)
    amp = rng.uniform(0.6, 1.0, len(cx))
    cells = np.zeros((ncy, ncx), dtype=np.int64)
    lay = _Layout(width, height, xb, yb, overlap, cell + 2 * overlap, np.stack([cells, cells], -1),
                  cells, np.zeros((ncy, ncx)), np.array(cx), np.array(cy), np.array(sx),
                  np.array(sy), amp)
    # threshold from the field's quantile on a coarse grid; softness so the edge is ~300 px wide
    xs = np.linspace(0, width, 256)
    ys = np.linspace(0, height, 192)
    field = lay.gy(ys).T @ lay.gx(xs)  # (len(ys), len(xs))
    lay.threshold = float(np.quantile(field, 1.0 - tissue_area))
    gy_, gx_ = np.gradient(field, ys[1] - ys[0], xs[1] - xs[0])
    grad = np.hypot(gx_, gy_)
    edge = np.abs(field - lay.threshold) < 0.05 * max(lay.threshold, 1e-6)
    slope = float(np.median(grad[edge])) if edge.any() else float(np.median(grad))
    lay.softness = max(slope * 300.0, 1e-9)

    # targets: the background (features ~0.04 of the slide's short side, a few hundred um) ...
    ccx, ccy = (xb[:-1] + xb[1:]) / 2, (yb[:-1] + yb[1:]) / 2  # cell centres
    on_tissue = lay.weight(lay.gy(ccy).T @ lay.gx(ccx)) > 0.5
    side = min(width, height)
    noise = _smooth_noise(rng, (ncy, ncx), 0.04 * side / cell)
    background = np.empty(noise.size)
    background[np.argsort(noise, axis=None)] = np.linspace(0.0, 1.0, noise.size)
    target = background.reshape(ncy, ncx) * (0.2 if dense_area > 0 else 1.0)
    if dense_area > 0 and on_tissue.any():
        # ... under nuclei-dense regions: Gaussian blobs centred on tissue, their outlines made
        # ragged by finer noise (a few cells across), thresholded to `dense_area` of the tissue
        n = int(rng.integers(5, 9))
        seeds = np.argwhere(on_tissue)[rng.choice(int(on_tissue.sum()), n)]
        by, bx = ccy[seeds[:, 0]], ccx[seeds[:, 1]]
        radius = rng.uniform(0.035, 0.07, n) * side
        aspect = rng.uniform(0.6, 1.6, n)
        ry, rx = radius * aspect ** 0.5, radius / aspect ** 0.5
        blobs = sum(rng.uniform(0.7, 1.0) * np.exp(-0.5 * ((ccy[:, None] - by[i]) / ry[i]) ** 2
                                                   - 0.5 * ((ccx[None, :] - bx[i]) / rx[i]) ** 2)
                    for i in range(n))
        blobs = blobs * (1.0 + 0.4 * _smooth_noise(rng, (ncy, ncx), 1.5))
        dense = blobs > np.quantile(blobs[on_tissue], 1.0 - min(1.0, dense_area))
        # a graded rim, whatever the cell size: nuclei thin out into the stroma, as epithelium
        # does, rather than stopping at a wall
        rim = ndimage.gaussian_filter(dense.astype(np.float64), max(0.7, RIM / cell / 2.5), mode="nearest")
        target = np.maximum(target, rim)
    lay.target = target

    # each cell draws a window of about its target rank (give or take spread/2): the most even
    # of three candidates, so that strips of one tissue in another, whose straight cut edges
    # would show the quilt's grid, come up only where nothing more even is near the target
    pool, _, uneven = window_pool(source, lay.window)
    spread = 0.1
    centre = np.round((target * (1.0 - spread) + spread / 2) * (len(pool) - 1)).astype(np.int64)
    reach = max(1, int(spread / 2 * len(pool)))
    candidates = np.clip(centre[..., None] + rng.integers(-reach, reach + 1, size=(ncy, ncx, 3)),
                         0, len(pool) - 1)
    best = np.take_along_axis(candidates, np.argmin(uneven[candidates], -1)[..., None], -1)[..., 0]
    lay.origins = pool[best]
    # orientation: one per stretch of tissue a few hundred um across, so fibres and epithelial
    # strips run on from cell to cell as in a real section (random turns weave them like cloth);
    # white noise frays the borders between stretches
    turn_field = _smooth_noise(rng, (ncy, ncx), 0.03 * side / cell) + 0.35 * rng.standard_normal((ncy, ncx))
    lay.turns = np.searchsorted(np.quantile(turn_field, [0.25, 0.5, 0.75]), turn_field)
    return lay


# ----------------------------------------------------------------------------------------------
# tiles


@dataclass
class _Run:
    """A stretch of one tile axis covered by one quilt cell, or cross-faded between two."""

    start: int  # tile-local pixels start..stop
    stop: int
    cells: tuple[int, ...]  # cell index along the axis: the cell, then its neighbour in a fade
    offsets: tuple[int, ...]  # pixel of each cell's window (as turned) at `start`
    # in a fade, the weights (uint16, out of 256) of the neighbour and of the cell, shaped to
    # broadcast over the tile's (rows, columns, 3): (n, 1, 1) along y, (1, n, 3) along x (a
    # full inner axis keeps numpy's mixed-type loops fast)
    fade: np.ndarray | None = None
    keep: np.ndarray | None = None


class _TileMaker:
    """Renders level-0 tiles: the quilt, faded into glass at the islands' edges."""

    def __init__(self, source: np.ndarray, lay: _Layout, dims: list[tuple[int, int]], tile: int,
                 quality: int, background: tuple[int, int, int]):
        self.lay = lay
        self.dims = dims
        self.tile = tile
        self.quality = quality
        self.bg = np.array(background, dtype=np.uint8)
        self.bg_row = np.tile(self.bg, tile).astype(np.uint16)  # a row of glass, flat
        self.bg_tile = np.ascontiguousarray(np.broadcast_to(self.bg, (tile, tile, 3)))
        self.bg_bytes = self.encode(self.bg_tile)
        self.crops = (source, np.ascontiguousarray(source.transpose(1, 0, 2)))  # see _turned
        self.run_cache: dict[tuple[int, int], list[_Run]] = {}
        self.window_cache: dict[tuple[int, int], np.ndarray] = {}
        # the island field's separable factors at pixel centres, and per tile row / column
        # their min and max, which bound the field over a whole tile without evaluating it
        w, h = dims[0]
        ntx, nty = -(-w // tile), -(-h // tile)
        fx = lay.gx(np.arange(ntx * tile) + 0.5)
        fy = lay.gy(np.arange(nty * tile) + 0.5)
        self.fx, self.fy = fx.astype(np.float32), fy.astype(np.float32)
        bx, by = fx.reshape(len(fx), ntx, tile), fy.reshape(len(fy), nty, tile)
        lo = np.einsum("by,bx->yx", by.min(-1), bx.min(-1))
        hi = np.einsum("by,bx->yx", by.max(-1), bx.max(-1))
        self.pure = np.full((nty, ntx), -1, dtype=np.int8)  # 1 tissue, 0 glass, -1 mixed
        self.pure[lay.weight(lo) >= 1.0] = 1
        self.pure[lay.weight(hi) <= 0.0] = 0

    def encode(self, rgb: np.ndarray) -> bytes:
        """Exactly what tifffile does for photometric='rgb', compression='jpeg' (YCbCr 4:2:0)."""
        return imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb), level=self.quality,
                                        colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2))

    def _runs(self, axis: int, start: int) -> list[_Run]:
        """How the pixels of one tile row (axis 0) or column (axis 1) split between quilt cells.

        Around every cell border, a linear cross-fade 2*overlap wide whose two weights sum to
        one; elsewhere one cell. Cached: every tile of a row shares its row's runs.
        """
        runs = self.run_cache.get((axis, start))
        if runs is not None:
            return runs
        n, ncell = self.tile, self.lay.turns.shape[axis]
        bounds, ov = (self.lay.yb, self.lay.xb)[axis], self.lay.overlap
        pos = start + np.arange(n) + 0.5
        j = np.clip(np.searchsorted(bounds, pos, side="right") - 1, 0, ncell - 1)
        f, size = pos - bounds[j], bounds[j + 1] - bounds[j]
        wp = np.clip(0.5 - np.minimum(f, size - f) / (2.0 * ov), 0.0, 0.5) if ov else np.zeros(n)
        p = np.where(f < size / 2, j - 1, j + 1)
        wp[(p < 0) | (p >= ncell)] = 0.0
        partner = np.where(wp > 0, p, -1)
        cuts = np.flatnonzero((np.diff(j) != 0) | (np.diff(partner) != 0)) + 1
        runs = []
        for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, n].tolist()):
            cells = (int(j[a]),) + ((int(p[a]),) if partner[a] >= 0 else ())
            # the window of cell c starts `overlap` before its first border
            offsets = tuple(min(max(0, start + a - int(bounds[c]) + ov), self.lay.window - (b - a))
                            for c in cells)
            run = _Run(a, b, cells, offsets)
            if len(cells) == 2:
                fade = np.round(wp[a:b] * 256).astype(np.uint16)
                shape = (b - a, 1, 1) if axis == 0 else (1, b - a, 3)
                run.fade = np.ascontiguousarray(np.broadcast_to(fade.reshape(shape[:2] + (1,)), shape))
                run.keep = 256 - run.fade
            runs.append(run)
        self.run_cache[(axis, start)] = runs
        return runs

    def _window(self, cy: int, cx: int) -> np.ndarray:
        """The window of quilt cell (cy, cx), turned (a view, cached)."""
        win = self.window_cache.get((cy, cx))
        if win is None:
            if len(self.window_cache) > 50_000:
                self.window_cache.clear()
            oy, ox = (int(v) for v in self.lay.origins[cy, cx])
            win = _turned(self.crops, oy, ox, self.lay.window, int(self.lay.turns[cy, cx]))
            self.window_cache[(cy, cx)] = win
        return win

    def _tissue(self, x0: int, y0: int) -> np.ndarray:
        """Quilted tissue pixels of the tile at (x0, y0)."""
        t = self.tile
        out = np.empty((t, t, 3), dtype=np.uint8)
        xruns = self._runs(1, x0)
        for ry in self._runs(0, y0):
            h = ry.stop - ry.start
            for rx in xruns:
                w = rx.stop - rx.start

                def px(i: int, j: int) -> np.ndarray:
                    oy, ox = ry.offsets[i], rx.offsets[j]
                    return self._window(ry.cells[i], rx.cells[j])[oy:oy + h, ox:ox + w]

                dst = out[ry.start:ry.stop, rx.start:rx.stop]
                if ry.fade is None and rx.fade is None:
                    dst[...] = px(0, 0)
                elif rx.fade is None:  # fade along y only (fixed point, weights out of 256)
                    dst[...] = (px(0, 0) * ry.keep + px(1, 0) * ry.fade + 128) >> 8
                elif ry.fade is None:  # along x only
                    dst[...] = (px(0, 0) * rx.keep + px(0, 1) * rx.fade + 128) >> 8
                else:  # a corner: along x in both rows, then along y
                    top = px(0, 0) * rx.keep + px(0, 1) * rx.fade
                    top >>= 8
                    bottom = px(1, 0) * rx.keep + px(1, 1) * rx.fade
                    bottom >>= 8
                    dst[...] = (top * ry.keep + bottom * ry.fade + 128) >> 8
        return out

    def render(self, tx: int, ty: int) -> np.ndarray | None:
        """RGB pixels of level-0 tile (tx, ty); None for a tile of glass only."""
        state = self.pure[ty, tx]
        if state == 0:
            return None
        t = self.tile
        x0, y0 = tx * t, ty * t
        tissue = self._tissue(x0, y0)
        if state == 1:
            return tissue
        # the tissue weight, out of 256, repeated for the 3 channels: flat (t, 3t) uint16 arrays
        # keep numpy in its fast same-type loops (~5x faster than broadcasting a (t, t, 1) weight)
        scale = 256.0 / self.lay.softness
        field = self.fy[:, y0:y0 + t].T @ self.fx[:, x0:x0 + t]
        weight = np.clip(field * np.float32(scale) + np.float32(128.5 - self.lay.threshold * scale), 0, 256)
        weight = np.repeat(weight.astype(np.uint16), 3, axis=1)
        out = tissue.reshape(t, 3 * t) * weight
        out += self.bg_row * (256 - weight)
        out += 128
        out >>= 8
        return out.astype(np.uint8).reshape(t, t, 3)

    def level0_tile(self, tx: int, ty: int) -> tuple[bytes, np.ndarray | None]:
        """JPEG bytes of level-0 tile (tx, ty), and its pixels halved for level 1 (None: glass)."""
        rgb = self.render(tx, ty)
        if rgb is None:
            return self.bg_bytes, None
        return self.encode(rgb), _halve(rgb)


def _halve(rgb: np.ndarray) -> np.ndarray:
    """2x2 box means, rounded ((a + b + c + d + 2) >> 2): how scanners build their pyramids."""
    rgb = np.ascontiguousarray(rgb)
    image = Image.frombuffer("RGB", (rgb.shape[1], rgb.shape[0]), rgb, "raw", "RGB", 0, 1)
    return np.asarray(image.reduce(2))


class _Levels:
    """Levels 1, 2, ... built from level 0 by 2x2 box means, one tile row (band) at a time.

    Fed the halved level-0 tiles in row-major order, it fills a band of level 1; a full band is
    encoded (in parallel) and halved into the band of level 2, and so on down. Memory is one band
    per level; the JPEG tiles go to a temporary file until the writer reaches their level (a
    TIFF holds level 0 first).
    """

    def __init__(self, maker: _TileMaker, pool: ThreadPoolExecutor, spool: BinaryIO):
        self.maker, self.pool, self.spool = maker, pool, spool
        t = maker.tile
        self.dims = maker.dims
        self.ntx = [-(-w // t) for w, _ in self.dims]
        self.nty = [-(-h // t) for _, h in self.dims]
        # a row of glass as wide as the widest band resets bands by memcpy
        self.glass_row = np.tile(maker.bg, (1, self.ntx[1] * t if len(self.dims) > 1 else 0, 1))
        self.bands = {k: np.tile(maker.bg_tile, (1, self.ntx[k], 1)) for k in range(1, len(self.dims))}
        self.filled = dict.fromkeys(self.bands, 0)  # rows of each band received so far
        self.rows = dict.fromkeys(self.bands, 0)  # tile rows of each level emitted so far
        self.tiles: dict[int, list[tuple[int, int] | None]] = {k: [] for k in self.bands}

    def add(self, tx: int, ty: int, half: np.ndarray | None) -> None:
        """A halved level-0 tile (None: glass, already the band's colour)."""
        if not self.bands:  # a slide of one level
            return
        h = self.maker.tile // 2
        if half is not None and (tx + 1) * h <= self.bands[1].shape[1]:
            y = (ty % 2) * h
            self.bands[1][y:y + h, tx * h:(tx + 1) * h] = half
        if tx == self.ntx[0] - 1:
            self._received(1, h)

    def _received(self, k: int, rows: int) -> None:
        self.filled[k] += rows
        if self.filled[k] >= self.maker.tile:
            self._emit(k)

    def _emit(self, k: int) -> None:
        """Encode the band of level k (full, or the last one), and pass it down halved."""
        band, t = self.bands[k], self.maker.tile
        if self.rows[k] < self.nty[k]:
            tiles = [band[:, tx * t:(tx + 1) * t] for tx in range(self.ntx[k])]
            for data in self.pool.map(self._encode_or_glass, tiles):
                if data is None:
                    self.tiles[k].append(None)
                else:
                    self.tiles[k].append((self.spool.tell(), len(data)))
                    self.spool.write(data)
        if k + 1 < len(self.dims):
            nxt, h = self.bands[k + 1], t // 2
            half = _halve(band)
            w = min(half.shape[1], nxt.shape[1])
            y = self.filled[k + 1] % t
            nxt[y:y + h, :w] = half[:, :w]
            self._received(k + 1, h)
        np.copyto(band, self.glass_row[:, :band.shape[1]])
        self.filled[k] = 0
        self.rows[k] += 1

    def _encode_or_glass(self, tile: np.ndarray) -> bytes | None:
        return None if np.array_equal(tile, self.maker.bg_tile) else self.maker.encode(tile)

    def finish(self) -> None:
        """Flush the partial bands at the bottom edge, highest resolution first."""
        for k in self.bands:
            while self.rows[k] < self.nty[k]:
                self._emit(k)

    def stream(self, k: int) -> Iterator[bytes]:
        """The JPEG tiles of level k in row-major order, read back from the spool."""
        for entry in self.tiles.pop(k):
            if entry is None:
                yield self.maker.bg_bytes
            else:
                self.spool.seek(entry[0])
                yield self.spool.read(entry[1])


def _level0_stream(maker: _TileMaker, pool: ThreadPoolExecutor, levels: _Levels) -> Iterator[bytes]:
    """Level-0 tiles in row-major order, rendered in parallel a tile row ahead (the workers keep
    busy while this thread builds the lower levels); their halved pixels go on to `levels`."""
    w, h = maker.dims[0]
    t = maker.tile
    ntx, nty = -(-w // t), -(-h // t)

    def submit(ty: int) -> list[Future]:
        return [pool.submit(maker.level0_tile, tx, ty) for tx in range(ntx)] if ty < nty else []

    ahead = submit(0)
    for ty in range(nty):
        row, ahead = ahead, submit(ty + 1)
        for tx, future in enumerate(row):
            data, half = future.result()
            levels.add(tx, ty, half)
            yield data


# ----------------------------------------------------------------------------------------------
# the writer


def _aperio_description(width: int, height: int, tile: int, quality: int, mpp: float,
                        level_size: tuple[int, int] | None = None) -> str:
    """An ImageDescription OpenSlide's Aperio driver recognises, with MPP and AppMag."""
    app_mag = 10.0 / mpp
    mag = f"{app_mag:.0f}" if abs(app_mag - round(app_mag)) < 0.05 else f"{app_mag:.2f}"
    head = f"Aperio Image Library v12.0.0 (MIL Heatmap Viewer demo)\r\n{width}x{height} "
    if level_size is None:
        head += f"[0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}"
    else:
        head += f"-> {level_size[0]}x{level_size[1]} - ({tile}x{tile}) JPEG/RGB Q={quality}"
    return (f"{head}|AppMag = {mag}|MPP = {mpp:.4f}|Filename = synthetic-from-CMU-1"
            f"|Source = tiled from CMU-1-Small-Region")


def write_pyramid(path: str | os.PathLike, width: int, height: int, source: np.ndarray, *,
                  tile: int = 256, quality: int = 75, mpp: float = 0.5, seed: int = 0,
                  block: int = 256, tissue_area: float = 0.4, dense_area: float = 0.35,
                  workers: int | None = None) -> Path:
    """Write a `width` x `height` pyramidal tiled JPEG TIFF whose tissue is quilted from `source`.

    `.svs` gives an Aperio-style file (ImageDescription with MPP and AppMag); any other extension
    a generic tiled TIFF with the MPP in its resolution tags. Levels are at downsamples 1, 2, 4,
    ... down to a longest side under ~1000 px. `source` is an RGB uint8 crop of real tissue (see
    `tissue_source`). Smooth tissue islands cover ~`tissue_area` of the slide, the rest scanner
    glass; inside them the tissue is a quilt of `block`-px cells (256 keeps the crop's windows
    small enough to be purely dense or purely stroma), each a window of the crop cross-faded into
    its neighbours, so it is continuous at every zoom. About `dense_area` of the tissue forms a
    few nuclei-dense regions with ragged outlines, many 512-px patches wide, quilted from the
    crop's densest windows and grading into stroma quilted from its sparsest; with `dense_area`
    0 there are no such regions and the tissue ranges over all the crop's windows in smooth
    stretches (give a stroma crop for a slide with few nuclei). Lower levels are 2x2 means of
    the level above. Written tile by tile to a temporary name and renamed: memory stays bounded
    (~120 MB for 40000x30000) and an interrupted run leaves no half-written slide. Deterministic
    for the same arguments.
    """
    path = Path(path)
    source = np.asarray(source)
    if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(f"source must be an RGB uint8 array (H, W, 3), got {source.dtype} {source.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width}x{height}")
    if tile % 16 or tile < 16:
        raise ValueError(f"tile must be a multiple of 16 (JPEG 4:2:0 blocks), got {tile}")
    crop_h, crop_w = source.shape[0] // tile * tile, source.shape[1] // tile * tile
    if crop_h < tile or crop_w < tile:
        raise ValueError(f"source {source.shape[1]}x{source.shape[0]} is smaller than one {tile}px tile")
    if not 0.0 <= dense_area <= 1.0:
        raise ValueError(f"dense_area must be within [0, 1], got {dense_area}")
    source = np.ascontiguousarray(source[:crop_h, :crop_w])
    # a cell's window (the cell and two overlaps: 1.25 cells) must fit in the crop
    cell = max(32, min(block, min(crop_h, crop_w) * 4 // 5) // 32 * 32)

    dims = level_dimensions(width, height)
    extent = (-(-width // tile) * tile, -(-height // tile) * tile)  # level 0 in whole tiles
    lay = _make_layout(source, width, height, cell, seed, tissue_area, dense_area, extent)
    maker = _TileMaker(source, lay, dims, tile, quality, background_colour(source))
    svs = path.suffix.lower() == ".svs"
    bigtiff = width * height * 3 > 3 * 2**30  # JPEG output stays far below 4 GB until then
    workers = workers or min(4, os.cpu_count() or 1)

    with atomic_output(path) as tmp, ThreadPoolExecutor(workers) as pool, \
            tempfile.TemporaryFile() as spool, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        levels = _Levels(maker, pool, spool)
        for k, (w, h) in enumerate(dims):
            desc = _aperio_description(width, height, tile, quality, mpp, None if k == 0 else (w, h)) if svs else None
            px_per_cm = 1e4 / (mpp * (1 << k))
            tif.write(
                _level0_stream(maker, pool, levels) if k == 0 else levels.stream(k),
                shape=(h, w, 3), dtype=np.uint8,
                tile=(tile, tile), photometric="rgb", compression="jpeg",
                compressionargs={"level": quality}, description=desc, metadata=None,
                subfiletype=1 if k else 0, resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER", software="MIL Heatmap Viewer demo",
            )
            if k == 0:
                levels.finish()  # tifffile stops pulling at the last tile: flush the bottom bands
    return path


def pyramid_summary(path: str | os.PathLike) -> dict:
    """Dimensions, levels, downsamples, vendor and MPP as OpenSlide sees them (a quick check by hand)."""
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        return {"dimensions": s.dimensions, "levels": s.level_count,
                "downsamples": [round(d, 3) for d in s.level_downsamples],
                "vendor": s.properties.get("openslide.vendor"),
                "mpp": s.properties.get("openslide.mpp-x")}


if __name__ == "__main__":  # pragma: no cover - `python -m demo.pyramid OUT [W H]`, for timing by hand
    import sys
    import time

    from demo.cmu import cmu_small_region

    w, h = (int(v) for v in (sys.argv[2:4] if len(sys.argv) > 3 else (40000, 30000)))
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pyramid.svs")
    t0 = time.perf_counter()
    src = tissue_source(cmu_small_region())
    t1 = time.perf_counter()
    write_pyramid(out, w, h, src)
    print(f"source {t1 - t0:.2f}s, write {time.perf_counter() - t1:.2f}s", pyramid_summary(out))
