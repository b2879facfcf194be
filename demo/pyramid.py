"""The demo's slide writer: quilted tissue (demo.tissue) as a tiled JPEG TIFF pyramid OpenSlide opens.

Aperio .svs (an ImageDescription with MPP and AppMag) or a generic tiled TIFF (MPP in the
resolution tags, reduced levels marked as such, which OpenSlide needs).

Design choices, for speed and bounded memory on a 2-core machine:
- Level 0 is rendered tile by tile (demo.tissue.TileMaker) on a thread pool, a tile row ahead;
  nothing the size of the slide is ever held.
- Levels 1, 2, ... are 2x2 box means of the level above, built a tile row (band) at a time as
  level 0 streams past: exactly what a scanner pyramid holds, in one band per level of memory.
  Their JPEG tiles wait in a temporary file until the writer reaches them (TIFF order).
- The same arguments give byte-identical files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from demo.tissue import TileMaker, background_colour, level_dimensions, make_layout
from scoremap.atomic import atomic_output


class _Tiles:
    """Level-0 tiles as the writer needs them: JPEG bytes as tifffile writes them, and halved."""

    def __init__(self, maker: TileMaker, quality: int):
        self.maker = maker
        self.tile, self.dims = maker.tile, maker.dims
        self.bg, self.bg_tile = maker.bg, maker.bg_tile
        self.quality = quality
        self.bg_bytes = self.encode(self.bg_tile)

    def encode(self, rgb: np.ndarray) -> bytes:
        """Exactly what tifffile does for photometric='rgb', compression='jpeg' (YCbCr 4:2:0)."""
        return imagecodecs.jpeg8_encode(
            np.ascontiguousarray(rgb),
            level=self.quality,
            colorspace="RGB",
            outcolorspace="YCBCR",
            subsampling=(2, 2),
        )

    def level0_tile(self, tx: int, ty: int) -> tuple[bytes, np.ndarray | None]:
        """JPEG bytes of level-0 tile (tx, ty), and its pixels halved for level 1 (None: glass)."""
        rgb = self.maker.render(tx, ty)
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

    def __init__(self, maker: _Tiles, pool: ThreadPoolExecutor, spool: BinaryIO):
        self.maker, self.pool, self.spool = maker, pool, spool
        t = maker.tile
        self.dims = maker.dims
        self.ntx = [-(-w // t) for w, _ in self.dims]
        self.nty = [-(-h // t) for _, h in self.dims]
        # a row of glass as wide as the widest band resets bands by memcpy
        self.glass_row = np.tile(maker.bg, (1, self.ntx[1] * t if len(self.dims) > 1 else 0, 1))
        self.bands = {
            k: np.tile(maker.bg_tile, (1, self.ntx[k], 1)) for k in range(1, len(self.dims))
        }
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
            self.bands[1][y : y + h, tx * h : (tx + 1) * h] = half
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
            tiles = [band[:, tx * t : (tx + 1) * t] for tx in range(self.ntx[k])]
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
            nxt[y : y + h, :w] = half[:, :w]
            self._received(k + 1, h)
        np.copyto(band, self.glass_row[:, : band.shape[1]])
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


def _level0_stream(maker: _Tiles, pool: ThreadPoolExecutor, levels: _Levels) -> Iterator[bytes]:
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


def _aperio_description(
    width: int,
    height: int,
    tile: int,
    quality: int,
    mpp: float,
    level_size: tuple[int, int] | None = None,
) -> str:
    """An ImageDescription OpenSlide's Aperio driver recognises, with MPP and AppMag."""
    app_mag = 10.0 / mpp
    mag = f"{app_mag:.0f}" if abs(app_mag - round(app_mag)) < 0.05 else f"{app_mag:.2f}"
    head = f"Aperio Image Library v12.0.0 (MIL Heatmap Viewer demo)\r\n{width}x{height} "
    if level_size is None:
        head += f"[0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}"
    else:
        head += f"-> {level_size[0]}x{level_size[1]} - ({tile}x{tile}) JPEG/RGB Q={quality}"
    return (
        f"{head}|AppMag = {mag}|MPP = {mpp:.4f}|Filename = synthetic-from-CMU-1"
        f"|Source = tiled from CMU-1-Small-Region"
    )


def write_pyramid(
    path: str | os.PathLike,
    width: int,
    height: int,
    source: np.ndarray,
    *,
    tile: int = 256,
    quality: int = 75,
    mpp: float = 0.5,
    seed: int = 0,
    block: int = 256,
    tissue_area: float = 0.4,
    dense_area: float = 0.35,
    workers: int | None = None,
) -> Path:
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
        raise ValueError(
            f"source must be an RGB uint8 array (H, W, 3), got {source.dtype} {source.shape}"
        )
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width}x{height}")
    if tile % 16 or tile < 16:
        raise ValueError(f"tile must be a multiple of 16 (JPEG 4:2:0 blocks), got {tile}")
    crop_h, crop_w = source.shape[0] // tile * tile, source.shape[1] // tile * tile
    if crop_h < tile or crop_w < tile:
        raise ValueError(
            f"source {source.shape[1]}x{source.shape[0]} is smaller than one {tile}px tile"
        )
    if not 0.0 <= dense_area <= 1.0:
        raise ValueError(f"dense_area must be within [0, 1], got {dense_area}")
    source = np.ascontiguousarray(source[:crop_h, :crop_w])
    # a cell's window (the cell and two overlaps: 1.25 cells) must fit in the crop
    cell = max(32, min(block, min(crop_h, crop_w) * 4 // 5) // 32 * 32)

    dims = level_dimensions(width, height)
    extent = (-(-width // tile) * tile, -(-height // tile) * tile)  # level 0 in whole tiles
    lay = make_layout(source, width, height, cell, seed, tissue_area, dense_area, extent)
    maker = _Tiles(TileMaker(source, lay, dims, tile, background_colour(source)), quality)
    svs = path.suffix.lower() == ".svs"
    bigtiff = width * height * 3 > 3 * 2**30  # JPEG output stays far below 4 GB until then
    workers = workers or min(4, os.cpu_count() or 1)

    with (
        atomic_output(path) as tmp,
        ThreadPoolExecutor(workers) as pool,
        tempfile.TemporaryFile() as spool,
        tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif,
    ):
        levels = _Levels(maker, pool, spool)
        for k, (w, h) in enumerate(dims):
            desc = (
                _aperio_description(width, height, tile, quality, mpp, None if k == 0 else (w, h))
                if svs
                else None
            )
            px_per_cm = 1e4 / (mpp * (1 << k))
            tif.write(
                _level0_stream(maker, pool, levels) if k == 0 else levels.stream(k),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                description=desc,
                metadata=None,
                subfiletype=1 if k else 0,
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                software="MIL Heatmap Viewer demo",
            )
            if k == 0:
                levels.finish()  # tifffile stops pulling at the last tile: flush the bottom bands
    return path


def pyramid_summary(path: str | os.PathLike) -> dict:
    """Dimensions, levels, downsamples, vendor and MPP as OpenSlide sees them (a quick check by hand)."""
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        return {
            "dimensions": s.dimensions,
            "levels": s.level_count,
            "downsamples": [round(d, 3) for d in s.level_downsamples],
            "vendor": s.properties.get("openslide.vendor"),
            "mpp": s.properties.get("openslide.mpp-x"),
        }


if (
    __name__ == "__main__"
):  # pragma: no cover - `python -m demo.pyramid OUT [W H]`, for timing by hand
    import sys
    import time

    from demo.cmu import cmu_small_region
    from demo.tissue import tissue_source

    w, h = (int(v) for v in (sys.argv[2:4] if len(sys.argv) > 3 else (40000, 30000)))
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pyramid.svs")
    t0 = time.perf_counter()
    src = tissue_source(cmu_small_region())
    t1 = time.perf_counter()
    write_pyramid(out, w, h, src)
    print(f"source {t1 - t0:.2f}s, write {time.perf_counter() - t1:.2f}s", pyramid_summary(out))
