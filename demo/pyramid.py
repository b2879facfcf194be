"""Large pyramidal slides tiled from real tissue, for the demo, the tests and the benchmarks.

No public whole-slide image of tens of thousands of pixels a side is small enough to ship, so we
build one: a mosaic of blocks cut from a real H&E crop (each block a different window of the crop,
rotated/flipped), laid inside a few smooth tissue "islands" on a scanner-white background, and
written as a tiled JPEG TIFF pyramid that OpenSlide opens (Aperio .svs or generic tiled TIFF).

Design choices, all for speed and bounded memory on a 2-core machine:
- Every level is generated tile by tile from a small in-memory pyramid of the crop; nothing of the
  size of the slide is ever held (a 40000x30000 slide needs ~100 MB, mostly the crop pyramid and
  the JPEG tile cache).
- Block windows start on tile boundaries, so most level-0..2 tiles are one of a few hundred
  distinct (window, rotation) tiles: each is JPEG-encoded once and its bytes reused.
- Lower levels are box-downsampled from the crop with the same windows, so level k shows the
  same tissue as level 0 reduced 2**k times (what a real scanner pyramid does, and what the
  tests check).
- The layout (islands, block windows, rotations) comes from `numpy.random.default_rng(seed)`:
  the same arguments give byte-identical files.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import imagecodecs
import numpy as np
import tifffile

from scoring.atomic import atomic_output

MAX_TOP_LEVEL_SIDE = 1000  # keep halving until the smallest level's longest side is below this


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


def _box_pyramid(source: np.ndarray, levels: int) -> list[np.ndarray]:
    """Crop reduced 2x per level by 2x2 means, the way scanner pyramids are made."""
    out = [source]
    cur = source
    for _ in range(1, levels):
        h, w = cur.shape[0] // 2 * 2, cur.shape[1] // 2 * 2
        if h < 2 or w < 2:
            cur = cur[:max(1, h // 2), :max(1, w // 2)]
        else:
            c = cur[:h, :w].astype(np.uint16)
            cur = ((c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2] + 2) >> 2)
            cur = cur.astype(np.uint8)
        out.append(np.ascontiguousarray(cur))
    return out


def _dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 rotations/reflections of a square block (a view, no copy)."""
    img = np.rot90(img, t & 3)
    return img[:, ::-1] if t & 4 else img


def _taper(u: np.ndarray) -> np.ndarray:
    """0 within 3% of a border, 1 beyond 12%: keeps a glass margin (a factor of each axis, so
    the island field stays a sum of separable terms)."""
    t = np.clip((np.minimum(u, 1.0 - u) - 0.03) / 0.09, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class _Layout:
    """Where tissue goes: islands (a sum of separable Gaussians) and one crop window per block."""

    width: int
    height: int
    block: int
    origins: np.ndarray  # (nby, nbx, 2) crop-window origin (y, x) at level 0, tile-aligned
    turns: np.ndarray  # (nby, nbx) dihedral index 0..7
    cx: np.ndarray
    cy: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    amp: np.ndarray
    threshold: float
    softness: float  # field units over which the blend goes 0 -> 1

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


def _make_layout(source: np.ndarray, width: int, height: int, block: int, tile: int,
                 seed: int, tissue_area: float) -> _Layout:
    """Deterministic islands covering about `tissue_area` of the slide, and block windows.

    Windows are drawn with probability growing with their tissue content, so blocks are mostly
    tissue and the islands' outline, not the crop's own glass, shapes the slide. Islands come in
    2-3 groups of blobs (like several sections on one glass slide) and fade out towards the border.
    """
    rng = np.random.default_rng(seed)
    crop_h, crop_w = source.shape[:2]
    nbx, nby = -(-width // block), -(-height // block)
    oys = np.arange(0, crop_h - block + 1, tile)
    oxs = np.arange(0, crop_w - block + 1, tile)
    mask = _saturation_mask(source[::4, ::4]).astype(np.float64)
    sat = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    b4 = block // 4
    y4, x4 = (oys // 4)[:, None], (oxs // 4)[None, :]
    frac = (sat[y4 + b4, x4 + b4] - sat[y4, x4 + b4] - sat[y4 + b4, x4] + sat[y4, x4]) / (b4 * b4)
    prob = (np.maximum(frac - 0.25, 0.0) ** 2).ravel()
    prob = prob / prob.sum() if prob.sum() > 0 else np.full(frac.size, 1.0 / frac.size)
    pick = rng.choice(frac.size, size=(nby, nbx), p=prob)
    origins = np.stack([oys[pick // len(oxs)], oxs[pick % len(oxs)]], axis=-1).astype(np.int64)
    turns = rng.integers(0, 8, size=(nby, nbx))
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
    lay = _Layout(width, height, block, origins, turns, np.array(cx), np.array(cy),
                  np.array(sx), np.array(sy), amp, 0.0, 1.0)
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
    return lay


# ----------------------------------------------------------------------------------------------
# tiles


class _TileMaker:
    """Produces the encoded JPEG bytes of any tile of any level, reusing repeated tiles."""

    def __init__(self, source: np.ndarray, lay: _Layout, dims: list[tuple[int, int]], tile: int,
                 quality: int, background: tuple[int, int, int]):
        self.lay = lay
        self.dims = dims
        self.tile = tile
        self.quality = quality
        self.bg = np.array(background, dtype=np.uint8)
        self.crop = _box_pyramid(source, len(dims))
        self.cache: dict[tuple, bytes] = {}
        self.bg_bytes = self._encode(np.broadcast_to(self.bg, (tile, tile, 3)))
        # per level: the island field's separable factors at pixel centres, and per tile row /
        # column their min and max, which bound the field over a whole tile without evaluating it
        self.fx: list[np.ndarray] = []
        self.fy: list[np.ndarray] = []
        self.pure: list[np.ndarray] = []  # (nty, ntx) int8: 1 tissue, 0 glass, -1 mixed
        for k, (w, h) in enumerate(dims):
            ntx, nty = -(-w // tile), -(-h // tile)
            xs = (np.arange(ntx * tile) + 0.5) * (1 << k)
            ys = (np.arange(nty * tile) + 0.5) * (1 << k)
            fx, fy = lay.gx(xs), lay.gy(ys)
            self.fx.append(fx.astype(np.float32))
            self.fy.append(fy.astype(np.float32))
            bx = fx.reshape(len(fx), ntx, tile)
            by = fy.reshape(len(fy), nty, tile)
            lo = np.einsum("by,bx->yx", by.min(-1), bx.min(-1))
            hi = np.einsum("by,bx->yx", by.max(-1), bx.max(-1))
            pure = np.full((nty, ntx), -1, dtype=np.int8)
            pure[lay.weight(lo) >= 1.0] = 1
            pure[lay.weight(hi) <= 0.0] = 0
            self.pure.append(pure)

    def _encode(self, rgb: np.ndarray) -> bytes:
        """Exactly what tifffile does for photometric='rgb', compression='jpeg' (YCbCr 4:2:0)."""
        return imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb), level=self.quality,
                                        colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2))

    def _tissue(self, k: int, x0: int, y0: int) -> tuple[np.ndarray, tuple | None]:
        """Mosaic pixels of the level-k tile at (x0, y0), and a cache key when it is one block."""
        t, lay, crop = self.tile, self.lay, self.crop[k]
        span = lay.block >> k  # block side at level k
        if span <= 0:
            span = 1
        bx0, by0 = x0 // span, y0 // span
        bx1, by1 = (x0 + t - 1) // span, (y0 + t - 1) // span
        nby, nbx = lay.turns.shape
        if bx0 == bx1 and by0 == by1 and bx0 < nbx and by0 < nby:
            oy, ox = (int(v) >> k for v in lay.origins[by0, bx0])
            turn = int(lay.turns[by0, bx0])
            view = _dihedral(crop[oy:oy + span, ox:ox + span], turn)
            ry, rx = y0 - by0 * span, x0 - bx0 * span
            key = None
            if span % t == 0 and ry % t == 0 and rx % t == 0:
                # a rotation/reflection of the block maps its tile cells onto cells, each turned
                # the same way: key the tile by the crop cell it shows, so every block that
                # shows that cell with that turn reuses one encoding
                m = span // t
                cell = int(_dihedral(np.arange(m * m).reshape(m, m), turn)[ry // t, rx // t])
                cy, cx = divmod(cell, m)
                key = (k, turn, oy + cy * t, ox + cx * t)
            return view[ry:ry + t, rx:rx + t], key
        out = np.empty((t, t, 3), dtype=np.uint8)
        out[...] = self.bg
        for by in range(by0, min(by1, nby - 1) + 1):
            for bx in range(bx0, min(bx1, nbx - 1) + 1):
                oy, ox = (int(v) >> k for v in lay.origins[by, bx])
                view = _dihedral(crop[oy:oy + span, ox:ox + span], int(lay.turns[by, bx]))
                # intersection of block (by, bx) with the tile, in level-k pixels
                ya, yb = max(y0, by * span), min(y0 + t, (by + 1) * span)
                xa, xb = max(x0, bx * span), min(x0 + t, (bx + 1) * span)
                out[ya - y0:yb - y0, xa - x0:xb - x0] = view[ya - by * span:yb - by * span,
                                                             xa - bx * span:xb - bx * span]
        return out, None

    def encoded(self, k: int, tx: int, ty: int) -> bytes:
        """JPEG bytes of tile (tx, ty) of level k."""
        state = self.pure[k][ty, tx]
        if state == 0:
            return self.bg_bytes
        t = self.tile
        x0, y0 = tx * t, ty * t
        tissue, key = self._tissue(k, x0, y0)
        if state == 1 and key is not None:
            hit = self.cache.get(key)
            if hit is None:
                hit = self._encode(tissue)
                self.cache[key] = hit
            return hit
        if state == 1:
            return self._encode(tissue)
        fy = self.fy[k][:, y0:y0 + t]
        fx = self.fx[k][:, x0:x0 + t]
        weight = self.lay.weight(fy.T @ fx).astype(np.float32)[..., None]
        tissue = tissue.astype(np.float32)
        bg = self.bg.astype(np.float32)
        blended = bg + (tissue - bg) * weight
        return self._encode(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def _tile_stream(maker: _TileMaker, k: int, pool: ThreadPoolExecutor) -> Iterator[bytes]:
    """Tiles of level k in row-major order, one tile row encoded in parallel at a time."""
    w, h = maker.dims[k]
    t = maker.tile
    ntx, nty = -(-w // t), -(-h // t)
    for ty in range(nty):
        # cache misses are few; encode a row in parallel, then let later rows hit the cache
        yield from pool.map(lambda tx: maker.encoded(k, tx, ty), range(ntx))


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
                  block: int = 1024, tissue_area: float = 0.4, workers: int | None = None) -> Path:
    """Write a `width` x `height` pyramidal tiled JPEG TIFF whose tissue is tiled from `source`.

    `.svs` gives an Aperio-style file (ImageDescription with MPP and AppMag); any other extension
    a generic tiled TIFF with the MPP in its resolution tags. Levels are at downsamples 1, 2, 4,
    ... down to a longest side under ~1000 px. `source` is an RGB uint8 crop of real tissue (see
    `tissue_source`); it is cut into `block`-sized windows (tile-aligned, rotated/flipped at
    random) placed inside smooth tissue islands covering ~`tissue_area` of the slide, the rest
    scanner glass. Written tile by tile to a temporary name and renamed: memory stays bounded and
    an interrupted run leaves no half-written slide. Deterministic for the same arguments.
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
    block = max(tile, min(block // tile * tile, crop_h, crop_w))
    source = np.ascontiguousarray(source[:crop_h, :crop_w])

    dims = level_dimensions(width, height)
    lay = _make_layout(source, width, height, block, tile, seed, tissue_area)
    maker = _TileMaker(source, lay, dims, tile, quality, background_colour(source))
    svs = path.suffix.lower() == ".svs"
    bigtiff = width * height * 3 > 3 * 2**30  # JPEG output stays far below 4 GB until then
    workers = workers or min(4, os.cpu_count() or 1)

    with atomic_output(path) as tmp, ThreadPoolExecutor(workers) as pool, \
            tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for k, (w, h) in enumerate(dims):
            desc = _aperio_description(width, height, tile, quality, mpp, None if k == 0 else (w, h)) if svs else None
            px_per_cm = 1e4 / (mpp * (1 << k))
            tif.write(
                _tile_stream(maker, k, pool), shape=(h, w, 3), dtype=np.uint8,
                tile=(tile, tile), photometric="rgb", compression="jpeg",
                compressionargs={"level": quality}, description=desc, metadata=None,
                subfiletype=1 if k else 0, resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER", software="MIL Heatmap Viewer demo",
            )
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
