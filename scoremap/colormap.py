"""Scores in [0, 1] to colours: the one path used by static heatmaps and by the viewer's tiles.

Pure numpy + matplotlib + Pillow (no torch). A raster of normalised scores becomes palette
*indices* first (`to_indices`): 0..254 along the colormap, 255 (`TRANSPARENT`) where no patch
lies or the score is under the threshold. Indices are one byte a pixel, so the static renderer
colours them with Pillow's palette conversion and the viewer ships them as palette PNGs
(`palette_png`) in which index 255 is fully transparent; both read the same `palette(cmap)`,
which is matplotlib's colormap sampled at 255 evenly spaced points. A score s is shown as the
colormap's colour at round(254 s) / 254: within half a step of matplotlib's own `cmap(s)`.
"""

from __future__ import annotations

import difflib
import io
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image

from scoremap.defaults import SUGGESTED_CMAPS
from scoremap.errors import UnknownColormap

TRANSPARENT = 255  # palette index of pixels that show no colour
N_COLOURS = 255  # palette indices 0..254 carry the colormap
_TILE_DEFLATE_LEVEL = 1  # index rasters are mostly runs: level 1 is as small as 6 and faster


def available_colormaps() -> list[str]:
    """Every colormap name matplotlib knows (reversed `_r` variants included), sorted."""
    return sorted(matplotlib.colormaps)


def check_colormap(name: object) -> str:
    """`name` when matplotlib knows it (any registered name, `_r` variants included), else
    UnknownColormap suggesting close names: the one check behind the config key, the query
    parameter and the viewer's default."""
    if isinstance(name, str) and name in matplotlib.colormaps:
        return name
    text = str(name)[:64]
    close = difflib.get_close_matches(text, list(matplotlib.colormaps), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownColormap(
        f"unknown colormap {text!r}{hint}; expected a matplotlib colormap name such as "
        f"{', '.join(SUGGESTED_CMAPS)}"
    )


def _colormap(cmap: str) -> matplotlib.colors.Colormap:
    return matplotlib.colormaps[check_colormap(cmap)]


@lru_cache(maxsize=256)
def lookup_table(cmap: str, n: int = 256) -> np.ndarray:
    """The colormap sampled at n evenly spaced points of [0, 1], (n, 3) uint8, read-only.

    Sampling uses matplotlib's own float-to-byte rule (`cmap(x, bytes=True)`), so colours match
    what matplotlib draws. Cached: tiles ask for the same table thousands of times.
    """
    if n < 2:
        raise ValueError(f"a lookup table needs at least 2 entries, got {n}")
    table = np.ascontiguousarray(_colormap(cmap)(np.linspace(0.0, 1.0, n), bytes=True)[:, :3])
    table.setflags(write=False)
    return table


@lru_cache(maxsize=256)
def palette(cmap: str) -> np.ndarray:
    """(256, 3) uint8 colours of indices 0..255: the colormap at 255 points, then black for 255.

    Index 255 is never shown (it is transparent in tiles and left unblended in static images);
    black only makes an accidental display obvious.
    """
    table = np.zeros((256, 3), np.uint8)
    table[:N_COLOURS] = lookup_table(cmap, N_COLOURS)
    table.setflags(write=False)
    return table


def to_indices(grid01: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Palette indices of a [0, 1] score raster: round(254 s), and 255 where s is NaN or < threshold.

    Values outside [0, 1] are clipped, so a slightly off normalisation never wraps around the
    colormap. `threshold` (in the same [0, 1] units) hides low scores, showing only the most
    attended regions.
    """
    g = np.asarray(grid01, dtype=np.float32)
    scaled = g * np.float32(N_COLOURS - 1)
    np.clip(scaled, 0, N_COLOURS - 1, out=scaled)  # NaN stays NaN
    np.rint(scaled, out=scaled)
    hidden = np.isnan(g)
    if threshold is not None:
        hidden |= g < np.float32(threshold)
    scaled[hidden] = TRANSPARENT
    return scaled.astype(np.uint8)


def colorize_rgb(indices: np.ndarray, cmap: str) -> np.ndarray:
    """(h, w, 3) uint8 colours of palette indices (transparent pixels come out black)."""
    return palette(cmap)[np.asarray(indices, dtype=np.uint8)]


@lru_cache(maxsize=512)
def _palette_and_alpha(cmap: str, alpha: float) -> tuple[bytes, bytes]:
    """The PNG palette of a colormap and the opacity of each index (index 255 fully transparent)."""
    opacity = round(min(max(alpha, 0.0), 1.0) * 255)
    return palette(cmap).tobytes(), bytes([opacity]) * N_COLOURS + b"\x00"


def palette_png(indices: np.ndarray, cmap: str, alpha: float = 1.0) -> bytes:
    """An 8-bit palette PNG of an index raster: the colormap's colours, index 255 transparent.

    A palette PNG is a quarter of an RGBA one and Pillow makes a 256 x 256 tile in ~0.15 ms, so
    the viewer can colour every tile on demand. `alpha` sets every colour's opacity; the viewer
    keeps 1 and blends in the browser, so changing alpha costs no request.
    """
    idx = np.ascontiguousarray(indices, dtype=np.uint8)
    if idx.ndim != 2 or idx.shape[0] < 1 or idx.shape[1] < 1:
        raise ValueError(f"indices must be a non-empty 2-D array, got shape {idx.shape}")
    colours, opacity = _palette_and_alpha(cmap, float(alpha))
    image = Image.frombuffer("P", (idx.shape[1], idx.shape[0]), idx, "raw", "P", 0, 1)
    image.putpalette(colours, "RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=_TILE_DEFLATE_LEVEL, transparency=opacity)
    return buf.getvalue()


def colorbar(cmap: str, width: int, height: int) -> Image.Image:
    """An RGB legend of the colormap through the same index path as the heatmap itself.

    Horizontal (low left, high right) when wider than tall, else vertical (high at the top).
    """
    if width < 1 or height < 1:
        raise ValueError(f"colorbar size must be positive, got {width}x{height}")
    horizontal = width >= height
    n = width if horizontal else height
    ramp = to_indices(np.linspace(0.0, 1.0, n))  # ends show the exact bottom and top colours
    if horizontal:
        idx = np.broadcast_to(ramp[None, :], (height, width))
    else:
        idx = np.broadcast_to(ramp[::-1, None], (height, width))
    return Image.fromarray(colorize_rgb(idx, cmap), "RGB")
