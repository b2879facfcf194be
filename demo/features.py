"""Cheap, honest per-patch descriptors for the demo: stain, nuclei, texture and colour statistics.

The demo has no foundation model (no weights to ship, no GPU to assume), yet the scoring pipeline
and the viewer need real (N, D) patch features whose attention means something. These are
computed from the patch pixels alone, so a heatmap of a model trained on them can be checked by
eye: nuclei-dense tissue looks purple and dark, and that is what the descriptors measure.

Stains are separated by colour deconvolution (Ruifrok & Johnston, Anal Quant Cytol Histol 2001):
optical density OD = -log10(I / 255) per channel, unmixed with the inverse of the matrix whose
rows are the unit OD vectors of haematoxylin, eosin and a residual channel orthogonal to both.
Haematoxylin binds nuclei, so its concentration and the fraction of pixels where it is high
("nuclei fraction") track nuclear density.

The vector has `FEATURE_DIM` = 32 entries, named in `FEATURE_NAMES` (no padding: 32 real
statistics). Patches are analysed at `analysis_downsample` (default 4x, ~2 um/px at 20x) read
from the pyramid level at or below it, whole rows of patches per OpenSlide read.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "tissue_fraction",
    "glass_fraction",
    "h_mean",
    "h_std",
    "h_p90",
    "e_mean",
    "e_std",
    "e_p90",
    "residual_abs_mean",
    "nuclei_fraction",
    "dark_fraction",
    "h_share",
    "gradient_energy",
    "h_gradient_energy",
    "laplacian_energy",
    "luminance_mean",
    "saturation_mean",
    "od_mean",
    "nuclei_fraction_tl",
    "nuclei_fraction_tr",
    "nuclei_fraction_bl",
    "nuclei_fraction_br",
    "h_hist_0.15_0.35",
    "h_hist_0.35_0.6",
    "h_hist_0.6_0.9",
    "h_hist_0.9_up",
)
FEATURE_DIM = len(FEATURE_NAMES)
NUCLEI_INDEX = FEATURE_NAMES.index("nuclei_fraction")

# Ruifrok & Johnston's unit OD vectors for haematoxylin and eosin (RGB order)
_H = np.array([0.650, 0.704, 0.286])
_E = np.array([0.072, 0.990, 0.105])
_R = np.cross(_H, _E)
_STAINS = np.stack([v / np.linalg.norm(v) for v in (_H, _E, _R)])
UNMIX = np.linalg.inv(_STAINS).astype(np.float32)  # OD (.., 3) @ UNMIX -> (H, E, residual)
_OD_LUT = (-np.log10(np.maximum(np.arange(256), 1) / 255.0)).astype(np.float32)

NUCLEI_H = 0.6  # haematoxylin concentration above which a pixel is counted as nuclear
TISSUE_OD = 0.2  # summed OD above which a pixel is stained (not glass)
DARK_LUMA = 0.45  # luminance below which a pixel is dark (nuclei, dense chromatin)


def describe(patches: np.ndarray) -> np.ndarray:
    """Descriptors of a stack of RGB patches (N, h, w, 3) uint8 -> (N, FEATURE_DIM) float32."""
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise ValueError(f"patches must be (N, h, w, 3) uint8, got {patches.dtype} {patches.shape}")
    n, h, w, _ = patches.shape
    if n == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    # planar (channel-first) layout: per-pixel channel maths become whole-array operations,
    # and per-patch statistics reduce over contiguous memory (5-10x faster than (.., 3) layout)
    planes = np.ascontiguousarray(np.moveaxis(patches, -1, 0))  # (3, n, h, w) uint8
    r, g, b = (planes[i].astype(np.float32) * np.float32(1.0 / 255.0) for i in range(3))
    od_r, od_g, od_b = (_OD_LUT[planes[i]] for i in range(3))
    u = UNMIX
    hem = od_r * u[0, 0] + od_g * u[1, 0] + od_b * u[2, 0]
    eos = od_r * u[0, 1] + od_g * u[1, 1] + od_b * u[2, 1]
    res = od_r * u[0, 2] + od_g * u[1, 2] + od_b * u[2, 2]
    od_sum = od_r + od_g + od_b
    luma = r * np.float32(0.299) + g * np.float32(0.587) + b * np.float32(0.114)
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    sat = (mx - mn) / np.maximum(mx, np.float32(1e-3))
    stained = od_sum > TISSUE_OD
    nuclei = (hem > NUCLEI_H) & stained

    def mean(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, -1).mean(1, dtype=np.float32)

    def frac(m: np.ndarray) -> np.ndarray:
        return np.count_nonzero(m.reshape(n, -1), axis=1) / np.float32(m[0].size)

    out = np.empty((n, FEATURE_DIM), dtype=np.float32)
    for i, c in enumerate((r, g, b)):
        flat = c.reshape(n, -1)
        out[:, i] = flat.mean(1, dtype=np.float32)
        out[:, 3 + i] = flat.std(1, dtype=np.float32)
    out[:, 6] = frac(stained)
    out[:, 7] = frac((mn > 0.85) & (sat < 0.1))
    hflat, eflat = hem.reshape(n, -1), eos.reshape(n, -1)
    out[:, 8] = hflat.mean(1, dtype=np.float32)
    out[:, 9] = hflat.std(1, dtype=np.float32)
    out[:, 11] = eflat.mean(1, dtype=np.float32)
    out[:, 12] = eflat.std(1, dtype=np.float32)
    k = int(0.9 * (hflat.shape[1] - 1))  # 90th percentile (lower nearest rank), by partition
    out[:, 10] = np.partition(hflat, k, axis=1)[:, k]
    out[:, 13] = np.partition(eflat, k, axis=1)[:, k]
    out[:, 14] = mean(np.abs(res))
    out[:, 15] = frac(nuclei)
    out[:, 16] = frac(luma < DARK_LUMA)
    hsum = mean(np.where(stained, np.maximum(hem, 0), 0))
    esum = mean(np.where(stained, np.maximum(eos, 0), 0))
    out[:, 17] = hsum / np.maximum(hsum + esum, 1e-6)
    # texture: RMS of finite differences (edges of nuclei, fibres), at the analysis scale
    out[:, 18] = np.sqrt(
        0.5 * (mean(np.square(np.diff(luma, axis=1))) + mean(np.square(np.diff(luma, axis=2))))
    )
    out[:, 19] = np.sqrt(
        0.5 * (mean(np.square(np.diff(hem, axis=1))) + mean(np.square(np.diff(hem, axis=2))))
    )
    if h > 2 and w > 2:
        lap = (
            luma[:, 1:-1, 1:-1] * 4
            - luma[:, :-2, 1:-1]
            - luma[:, 2:, 1:-1]
            - luma[:, 1:-1, :-2]
            - luma[:, 1:-1, 2:]
        )
        out[:, 20] = np.sqrt(mean(np.square(lap)))
    else:
        out[:, 20] = 0.0
    out[:, 21] = mean(luma)
    out[:, 22] = mean(sat)
    out[:, 23] = mean(od_sum) / 3.0
    hh, hw = max(1, h // 2), max(1, w // 2)
    quads = (nuclei[:, :hh, :hw], nuclei[:, :hh, hw:], nuclei[:, hh:, :hw], nuclei[:, hh:, hw:])
    for i, q in enumerate(quads):
        out[:, 24 + i] = frac(np.ascontiguousarray(q)) if q.size else out[:, 15]
    edges = (0.15, 0.35, 0.6, 0.9, np.inf)
    for i in range(4):
        out[:, 28 + i] = frac((hem >= edges[i]) & (hem < edges[i + 1]))
    return out


def nuclei_density(features: np.ndarray) -> np.ndarray:
    """The nuclei-fraction column: what the demo model is trained to attend to."""
    return np.asarray(features)[:, NUCLEI_INDEX]


def _read_level(
    slide, analysis_downsample: float, patch_size_level0: int
) -> tuple[int, float, int, int]:
    """Pyramid level to read, its downsample, patch side there, and the extra reduction factor."""
    level = slide.get_best_level_for_downsample(max(1.0, analysis_downsample) * 1.001)
    lds = float(slide.level_downsamples[level])
    side = max(1, round(patch_size_level0 / lds))
    factor = max(1, round(analysis_downsample / lds))
    while factor > 1 and side // factor < 16:
        factor -= 1
    side = side // factor * factor
    return level, lds, side, factor


def patch_features(
    slide_path: str | os.PathLike,
    coords: np.ndarray,
    patch_size_level0: int,
    *,
    analysis_downsample: float = 4.0,
    max_strip: int = 8192,
    workers: int | None = None,
) -> np.ndarray:
    """Descriptors (N, FEATURE_DIM) float32 of the patches at level-0 top-left `coords` (N, 2).

    Reads the level at or below `analysis_downsample`, whole rows of patches at a time (one
    OpenSlide read per row of up to `max_strip` level pixels), then block-averages to the
    analysis scale, so slides of different pyramids give comparable texture statistics. Rows are
    processed on a few threads (OpenSlide and numpy release the GIL). Order follows `coords`.
    """
    import openslide

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    out = np.zeros((len(coords), FEATURE_DIM), dtype=np.float32)
    if len(coords) == 0:
        return out
    path = str(slide_path)
    with openslide.OpenSlide(path) as probe:
        level, lds, side, factor = _read_level(probe, analysis_downsample, patch_size_level0)
    # group patches into strips: same y, consecutive x, at most max_strip level pixels wide
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    groups: list[np.ndarray] = []
    start = 0
    for i in range(1, len(order) + 1):
        if (
            i == len(order)
            or coords[order[i], 1] != coords[order[start], 1]
            or (coords[order[i], 0] - coords[order[start], 0]) / lds + side > max_strip
        ):
            groups.append(order[start:i])
            start = i
    local = threading.local()
    opened: list = []

    def run(idx: np.ndarray) -> None:
        slide = getattr(local, "slide", None)
        if slide is None:  # one handle per thread: OpenSlide handles are not shared across reads
            slide = local.slide = openslide.OpenSlide(path)
            opened.append(slide)
        xs, y = coords[idx, 0], int(coords[idx[0], 1])
        x0 = int(xs.min())
        offs = np.round((xs - x0) / lds).astype(np.int64)
        width = int(offs.max()) + side
        strip = np.asarray(slide.read_region((x0, y), level, (width, side)))
        rgb = strip[..., :3]
        if strip[..., 3].min() < 255:  # outside the scanned area: glass
            rgb = rgb.copy()
            rgb[strip[..., 3] == 0] = 255
        cols = offs[:, None] + np.arange(side)[None, :]
        stack = rgb[:, cols].transpose(1, 0, 2, 3)  # (n, side, side, 3)
        if factor > 1:
            s = side // factor
            stack = stack.reshape(len(idx), s, factor, s, factor, 3).mean((2, 4), dtype=np.float32)
            stack = (stack + 0.5).astype(np.uint8)
        out[idx] = describe(np.ascontiguousarray(stack))

    workers = workers or min(4, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, groups))
    finally:
        for slide in opened:
            slide.close()
    return out
