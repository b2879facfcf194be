"""Tissue for large synthetic slides: a quilt of a real H&E crop, rendered a level-0 tile at a time.

No public whole-slide image of tens of thousands of pixels a side is small enough to ship, so we
build one from a real H&E crop: a quilt of 256-px cells, each a window of the crop cross-faded
into its neighbours, laid inside a few smooth tissue "islands" on a scanner-white background.
`demo.pyramid` writes the tiles this module renders into a TIFF pyramid.

What it should look like: continuous tissue at every zoom (no block edges, no checkerboard), and
at the overview regions of nuclei-dense tissue many patches wide, graded into stroma, so that a
model attending to nuclei draws coherent hot and cold areas, as on a real slide. Each cell picks
its window by nuclei density (measured as demo.features measures patches), following a smooth
layout of dense regions over a stroma background; orientations change in stretches, not per cell.
The layout (islands, targets, windows, orientations) comes from `numpy.random.default_rng(seed)`:
the same arguments give the same pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

RIM = 1200  # level-0 px over which nuclei-dense regions fade into stroma
MAX_TOP_LEVEL_SIDE = 1000  # pyramids halve until the smallest level's longest side is below this


# ----------------------------------------------------------------------------------------------
# the tissue source


def tissue_source(
    slide_path: str | os.PathLike, size: int = 2048, *, prefer: str = "tissue"
) -> np.ndarray:
    """A `size` x `size` RGB uint8 crop of a real scan, placed where it holds the most tissue.

    The crop is the raw material of every synthetic slide, so it should be mostly tissue (the
    mosaic adds its own background). Windows are scored on a low-resolution image with
    summed-area tables: `prefer="tissue"` maximises stained area; `prefer="stroma"` maximises
    stained area with few nuclei (haematoxylin-dense pixels count three times against), giving
    a slide whose tissue is mostly eosin-rich stroma. The crop is clipped to smaller slides.
    """
    import openslide

    from demo.features import _OD_LUT, NUCLEI_H, UNMIX
    from demo.patches import read_low_res

    if prefer not in ("tissue", "stroma"):
        raise ValueError(f"prefer must be 'tissue' or 'stroma', got {prefer!r}")
    with openslide.OpenSlide(str(slide_path)) as slide:
        width, height = slide.dimensions
        cw, ch = min(size, width), min(size, height)
        thumb, sx, sy = read_low_res(slide, 8.0)
        lh, lw = thumb.shape[:2]
        kw, kh = max(1, round(cw / sx)), max(1, round(ch / sy))
        kw, kh = min(kw, lw), min(kh, lh)

        def window_mean(m: np.ndarray) -> np.ndarray:
            sat = np.pad(m.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            return (sat[kh:, kw:] - sat[:-kh, kw:] - sat[kh:, :-kw] + sat[:-kh, :-kw]) / (kw * kh)

        score = window_mean(_saturation_mask(thumb))
        if prefer == "stroma":
            hem = (_OD_LUT[thumb] @ UNMIX)[..., 0]
            score = score - 3.0 * window_mean(hem > NUCLEI_H)
        # ties (several full windows) resolve towards the slide centre, deterministically
        yy, xx = np.mgrid[0 : score.shape[0], 0 : score.shape[1]]
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


def _turned(
    crops: tuple[np.ndarray, np.ndarray], oy: int, ox: int, side: int, turn: int
) -> np.ndarray:
    """The `side` square at (oy, ox) of the crop, as is, flipped, transposed or rotated (a view).

    `crops` holds the crop and its transpose, both C-contiguous; turn bit 1 picks the transpose,
    bit 0 flips rows. Those four orientations are views whose rows stay contiguous, so copying
    out of them runs at memcpy speed (a column flip or a transposed view is ~40x slower).
    """
    view = (
        crops[1][ox : ox + side, oy : oy + side]
        if turn & 2
        else crops[0][oy : oy + side, ox : ox + side]
    )
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


def window_pool(
    source: np.ndarray, window: int, step: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate `window`-px squares of the crop, sparsest first: (N, 2) origins (y, x), their
    nuclei densities, and how unevenly the nuclei spread over each (the standard deviation of
    the density of its 64-px parts).

    Measured as demo.features measures patches (4x-reduced pixels, haematoxylin-dense fraction),
    so a cell's window predicts the nuclei fraction the model will see there. Only windows that
    are nearly all tissue are kept (the islands, not holes in the crop, decide where glass is).
    """
    from demo.features import _OD_LUT, NUCLEI_H, TISSUE_OD, UNMIX

    h4, w4 = source.shape[0] // 4, source.shape[1] // 4
    small = source[: h4 * 4, : w4 * 4].reshape(h4, 4, w4, 4, 3).mean((1, 3), dtype=np.float32)
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
    uneven = np.sqrt(np.maximum(window_mean(local**2).ravel() - window_mean(local).ravel() ** 2, 0))
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


def make_layout(
    source: np.ndarray,
    width: int,
    height: int,
    cell: int,
    seed: int,
    tissue_area: float,
    dense_area: float,
    extent: tuple[int, int],
) -> _Layout:
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
    lay = _Layout(
        width,
        height,
        xb,
        yb,
        overlap,
        cell + 2 * overlap,
        np.stack([cells, cells], -1),
        cells,
        np.zeros((ncy, ncx)),
        np.array(cx),
        np.array(cy),
        np.array(sx),
        np.array(sy),
        amp,
    )
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
        ry, rx = radius * aspect**0.5, radius / aspect**0.5
        blobs = sum(
            rng.uniform(0.7, 1.0)
            * np.exp(
                -0.5 * ((ccy[:, None] - by[i]) / ry[i]) ** 2
                - 0.5 * ((ccx[None, :] - bx[i]) / rx[i]) ** 2
            )
            for i in range(n)
        )
        blobs = blobs * (1.0 + 0.4 * _smooth_noise(rng, (ncy, ncx), 1.5))
        dense = blobs > np.quantile(blobs[on_tissue], 1.0 - min(1.0, dense_area))
        # a graded rim, whatever the cell size: nuclei thin out into the stroma, as epithelium
        # does, rather than stopping at a wall
        rim = ndimage.gaussian_filter(
            dense.astype(np.float64), max(0.7, RIM / cell / 2.5), mode="nearest"
        )
        target = np.maximum(target, rim)
    lay.target = target

    # each cell draws a window of about its target rank (give or take spread/2): the most even
    # of three candidates, so that strips of one tissue in another, whose straight cut edges
    # would show the quilt's grid, come up only where nothing more even is near the target
    pool, _, uneven = window_pool(source, lay.window)
    spread = 0.1
    centre = np.round((target * (1.0 - spread) + spread / 2) * (len(pool) - 1)).astype(np.int64)
    reach = max(1, int(spread / 2 * len(pool)))
    candidates = np.clip(
        centre[..., None] + rng.integers(-reach, reach + 1, size=(ncy, ncx, 3)), 0, len(pool) - 1
    )
    best = np.take_along_axis(candidates, np.argmin(uneven[candidates], -1)[..., None], -1)[..., 0]
    lay.origins = pool[best]
    # orientation: one per stretch of tissue a few hundred um across, so fibres and epithelial
    # strips run on from cell to cell as in a real section (random turns weave them like cloth);
    # white noise frays the borders between stretches
    turn_field = _smooth_noise(rng, (ncy, ncx), 0.03 * side / cell) + 0.35 * rng.standard_normal(
        (ncy, ncx)
    )
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


class TileMaker:
    """Renders level-0 tiles: the quilt, faded into glass at the islands' edges."""

    def __init__(
        self,
        source: np.ndarray,
        lay: _Layout,
        dims: list[tuple[int, int]],
        tile: int,
        background: tuple[int, int, int],
    ):
        self.lay = lay
        self.dims = dims
        self.tile = tile
        self.bg = np.array(background, dtype=np.uint8)
        self.bg_row = np.tile(self.bg, tile).astype(np.uint16)  # a row of glass, flat
        self.bg_tile = np.ascontiguousarray(np.broadcast_to(self.bg, (tile, tile, 3)))
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
        for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, n].tolist(), strict=True):
            cells = (int(j[a]),) + ((int(p[a]),) if partner[a] >= 0 else ())
            # the window of cell c starts `overlap` before its first border
            offsets = tuple(
                min(max(0, start + a - int(bounds[c]) + ov), self.lay.window - (b - a))
                for c in cells
            )
            run = _Run(a, b, cells, offsets)
            if len(cells) == 2:
                fade = np.round(wp[a:b] * 256).astype(np.uint16)
                shape = (b - a, 1, 1) if axis == 0 else (1, b - a, 3)
                run.fade = np.ascontiguousarray(
                    np.broadcast_to(fade.reshape((*shape[:2], 1)), shape)
                )
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

                def px(i: int, j: int, ry=ry, rx=rx, h=h, w=w) -> np.ndarray:
                    oy, ox = ry.offsets[i], rx.offsets[j]
                    return self._window(ry.cells[i], rx.cells[j])[oy : oy + h, ox : ox + w]

                dst = out[ry.start : ry.stop, rx.start : rx.stop]
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
        field = self.fy[:, y0 : y0 + t].T @ self.fx[:, x0 : x0 + t]
        weight = np.clip(
            field * np.float32(scale) + np.float32(128.5 - self.lay.threshold * scale), 0, 256
        )
        weight = np.repeat(weight.astype(np.uint16), 3, axis=1)
        out = tissue.reshape(t, 3 * t) * weight
        out += self.bg_row * (256 - weight)
        out += 128
        out >>= 8
        return out.astype(np.uint8).reshape(t, t, 3)
