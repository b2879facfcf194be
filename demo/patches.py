"""Tissue mask, patch grid and the two coordinate-file layouts that users bring (CLAM, TRIDENT).

The demo cohort must look like what a researcher has on disk after CLAM's `create_patches_fp.py`
+ `extract_features_fp.py` or after TRIDENT, because the scoring pipeline reads exactly those
files. We patch the way both tools do in spirit: a tissue mask on a low-resolution image
(saturation, since stained tissue is coloured and glass is grey), then a regular grid of level-0
top-left coordinates kept where the patch is mostly tissue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import h5py
import numpy as np
from scipy import ndimage

from scoremap.atomic import atomic_output
from scoremap.slides import slide_mpp

if TYPE_CHECKING:
    import openslide

#: A slide given by path, or an open OpenSlide handle (not closed by the functions here).
SlideLike = Union[str, os.PathLike, "openslide.OpenSlide"]

DEFAULT_MASK_SIDE = (
    1024  # longest side of the mask image: >= 12 mask px per 512-px patch on 40k slides
)


def _open(slide_or_path: SlideLike) -> tuple[openslide.OpenSlide, bool]:
    """An OpenSlide handle and whether we opened it (and so must close it)."""
    import openslide

    if isinstance(slide_or_path, (str, os.PathLike)):
        return openslide.OpenSlide(str(slide_or_path)), True
    return slide_or_path, False


def read_low_res(
    slide_or_path: SlideLike, downsample: float, *, strip_rows: int = 512
) -> tuple[np.ndarray, float, float]:
    """RGB image of the whole slide at about `downsample`, read in strips to bound memory.

    Reads the pyramid level closest below `downsample` and block-averages it by the remaining
    integer factor (a 1-level scan like CMU-1-Small-Region has only level 0). Returns the image and
    the level-0 pixels per image pixel along x and y, exact for this image's size.
    """
    slide, owned = _open(slide_or_path)
    try:
        width, height = slide.dimensions
        level = slide.get_best_level_for_downsample(max(1.0, downsample))
        lw, lh = slide.level_dimensions[level]
        lds = slide.level_downsamples[level]
        f = max(1, int(downsample / lds + 1e-6))
        ow, oh = max(1, lw // f), max(1, lh // f)
        out = np.empty((oh, ow, 3), dtype=np.uint8)
        rows = max(f, strip_rows // f * f)
        for y in range(0, oh * f, rows):
            h = min(rows, oh * f - y)
            region = slide.read_region((0, round(y * lds)), level, (ow * f, h))
            rgba = np.asarray(region)
            rgb = _flatten_alpha(rgba)
            if f > 1:
                rgb = rgb.reshape(h // f, f, ow, f, 3).mean(axis=(1, 3), dtype=np.float32)
                rgb = (rgb + 0.5).astype(np.uint8)
            out[y // f : (y + h) // f] = rgb
        return out, width / ow, height / oh
    finally:
        if owned:
            slide.close()


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """RGB of an OpenSlide RGBA region, transparent (outside the scanned area) as white glass."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return rgb
    rgb = rgb.copy()
    rgb[alpha == 0] = 255
    return rgb


@dataclass
class TissueMask:
    """Boolean tissue mask of a whole slide and its scale (level-0 px per mask px along x, y)."""

    mask: np.ndarray
    scale_x: float
    scale_y: float

    def coverage(self, coords: np.ndarray, size: int) -> np.ndarray:
        """Fraction of each level-0 patch [x, x+size) x [y, y+size) that the mask calls tissue."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        sat = np.pad(self.mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        h, w = self.mask.shape
        x0 = np.clip(np.floor(coords[:, 0] / self.scale_x), 0, w).astype(np.int64)
        y0 = np.clip(np.floor(coords[:, 1] / self.scale_y), 0, h).astype(np.int64)
        x1 = np.clip(np.ceil((coords[:, 0] + size) / self.scale_x), 0, w).astype(np.int64)
        y1 = np.clip(np.ceil((coords[:, 1] + size) / self.scale_y), 0, h).astype(np.int64)
        area = np.maximum((x1 - x0) * (y1 - y0), 1)
        inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
        return inside / area


def tissue_mask(
    slide_or_path: SlideLike,
    *,
    max_side: int = DEFAULT_MASK_SIDE,
    saturation: float = 0.08,
    min_area_level0: float = 128 * 128,
) -> TissueMask:
    """Tissue (True) vs glass on a low-resolution image of the slide.

    Stained tissue is saturated whatever its brightness and glass is grey (bright, dark with dust
    or black at the scan border), so a pixel is tissue when its smoothed HSV saturation exceeds
    `saturation` and it is not black. Specks smaller than `min_area_level0` level-0 px^2 are
    dropped, small gaps closed; holes such as vessel lumina stay glass.
    """
    slide, owned = _open(slide_or_path)
    try:
        width, height = slide.dimensions
        rgb, sx, sy = read_low_res(slide, max(1.0, max(width, height) / max_side))
    finally:
        if owned:
            slide.close()
    # channel-wise maximum/minimum of planes: reducing over a trailing axis of 3 is slow in numpy
    mx = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).astype(np.float32)
    mn = np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).astype(np.float32)
    sat = ndimage.uniform_filter((mx - mn) / np.maximum(mx, 1.0), size=3)
    mask = (sat > saturation) & (ndimage.uniform_filter(mx, size=3) > 40)
    mask = ndimage.binary_closing(mask, iterations=1, border_value=0)
    mask = ndimage.binary_opening(mask, iterations=1, border_value=0)
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes * sx * sy >= min_area_level0
        keep[0] = False
        mask = keep[labels]
    return TissueMask(mask, sx, sy)


def patch_grid(
    slide_or_path: SlideLike,
    patch_size: int,
    step: int | None = None,
    *,
    min_tissue: float = 0.25,
    mask: TissueMask | None = None,
) -> np.ndarray:
    """Level-0 top-left (x, y) of every whole `patch_size` patch on a `step` grid that is tissue.

    Row-major (y, then x), int64, shape (N, 2) like CLAM's and TRIDENT's `coords`. A patch is kept
    when at least `min_tissue` of it is tissue in the mask; only patches wholly inside the slide.
    """
    step = int(step or patch_size)
    if patch_size <= 0 or step <= 0:
        raise ValueError(f"patch_size and step must be positive, got {patch_size}, {step}")
    slide, owned = _open(slide_or_path)
    try:
        width, height = slide.dimensions
        if mask is None:
            mask = tissue_mask(slide)
    finally:
        if owned:
            slide.close()
    xs = np.arange(0, width - patch_size + 1, step, dtype=np.int64)
    ys = np.arange(0, height - patch_size + 1, step, dtype=np.int64)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    keep = mask.coverage(coords, patch_size) >= min_tissue
    return np.ascontiguousarray(coords[keep])


# ----------------------------------------------------------------------------------------------
# writers


def _check(features: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (N, D) features and int64 (N, 2) coords, or ValueError when they disagree."""
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.int64)
    if (
        features.ndim != 2
        or coords.ndim != 2
        or coords.shape[1] != 2
        or len(features) != len(coords)
    ):
        raise ValueError(
            f"features (N, D) and coords (N, 2) disagree: {features.shape} vs {coords.shape}"
        )
    return features, coords


def _level_info(
    slide_path: str | os.PathLike,
) -> tuple[list[tuple[int, int]], list[tuple[float, float]], float | None]:
    """Level sizes, per-axis level downsamples (as CLAM computes them) and objective power."""
    import openslide

    with openslide.OpenSlide(str(slide_path)) as slide:
        dims = [tuple(int(v) for v in d) for d in slide.level_dimensions]
        w0, h0 = dims[0]
        downs = [(w0 / w, h0 / h) for w, h in dims]
        power = slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        mpp = slide_mpp(slide.properties)
    mag = float(power) if power else (10.0 / mpp[0] if mpp else None)
    return dims, downs, mag


def write_clam(
    features_dir: str | os.PathLike,
    slide_id: str,
    features: np.ndarray,
    coords: np.ndarray,
    *,
    slide_path: str | os.PathLike,
    patch_size: int,
    patch_level: int = 0,
    patches_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """CLAM's layout: `h5_files/{id}.h5` (features + coords with CLAM's patching attrs), `pt_files/{id}.pt`.

    `patch_size` is in pixels of `patch_level` (CLAM's convention), so the level-0 patch size a
    reader must derive is `patch_size * downsample[patch_level]`. `coords` are level-0 top-left.
    """
    import torch

    features, coords = _check(features, coords)
    dims, downs, _ = _level_info(slide_path)
    if not 0 <= patch_level < len(dims):
        raise ValueError(f"patch_level {patch_level} not in the slide's {len(dims)} levels")
    features_dir = Path(features_dir)
    h5_path = features_dir / "h5_files" / f"{slide_id}.h5"
    pt_path = features_dir / "pt_files" / f"{slide_id}.pt"
    save_path = Path(patches_dir) if patches_dir else features_dir.parent / "patches"
    with atomic_output(h5_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=features)
        dset = f.create_dataset("coords", data=coords)
        dset.attrs["patch_size"] = int(patch_size)
        dset.attrs["patch_level"] = int(patch_level)
        dset.attrs["downsample"] = np.asarray(downs[patch_level], dtype=np.float64)
        dset.attrs["downsampled_level_dim"] = np.asarray(dims[patch_level], dtype=np.int64)
        dset.attrs["level_dim"] = np.asarray(dims[patch_level], dtype=np.int64)
        dset.attrs["name"] = slide_id
        dset.attrs["save_path"] = str(save_path)
    with atomic_output(pt_path) as tmp:
        torch.save(torch.from_numpy(features.copy()), tmp)
    return h5_path, pt_path


def write_trident(
    path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    *,
    slide_path: str | os.PathLike,
    patch_size_level0: int,
    target_magnification: float,
    overlap: int = 0,
    name: str | None = None,
    encoder: str | None = None,
    savetodir: str | None = None,
) -> Path:
    """TRIDENT's layout: one h5 with `features` (N, D) and `coords` (N, 2) carrying its patching attrs.

    `patch_size` is recorded at `target_magnification`; `patch_size_level0` is what readers use.
    """
    features, coords = _check(features, coords)
    dims, _, mag = _level_info(slide_path)
    if mag is None:
        raise ValueError(
            f"{slide_path} has neither objective power nor MPP; TRIDENT needs a magnification"
        )
    path = Path(path)
    name = name or path.stem
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        fset = f.create_dataset("features", data=features)
        if encoder:
            fset.attrs["encoder"] = encoder
        dset = f.create_dataset("coords", data=coords)
        dset.attrs["patch_size"] = round(patch_size_level0 * target_magnification / mag)
        dset.attrs["patch_size_level0"] = int(patch_size_level0)
        dset.attrs["target_magnification"] = _num(target_magnification)
        dset.attrs["level0_magnification"] = _num(mag)
        dset.attrs["level0_width"] = int(dims[0][0])
        dset.attrs["level0_height"] = int(dims[0][1])
        dset.attrs["overlap"] = int(overlap)
        dset.attrs["name"] = name
        dset.attrs["savetodir"] = savetodir if savetodir is not None else str(path.parent)
    return path


def _num(v: float) -> int | float:
    """Magnifications as TRIDENT stores them: integers when they are whole (20, not 20.0)."""
    return round(v) if abs(v - round(v)) < 1e-6 else float(v)
