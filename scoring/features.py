"""A slide's bag: patch features and level-0 coordinates, as CLAM or TRIDENT wrote them.

Feature files come as `.pt` tensors (CLAM `pt_files`) or `.h5` with a `features` dataset (CLAM
`h5_files`, TRIDENT); coordinates always come from an `.h5` `coords` dataset. The level-0 patch size
comes from the coords' attributes, because the same coords can be written at any patch level.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from scoring.config import Config
from scoring.errors import FeatureError
from scoring.inventory import SlideJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bag:
    features: np.ndarray  # (N, D) float32
    l0_coords: np.ndarray  # (N, 2) int64, top-left corners at level 0
    l0_patch: int  # patch side at level 0
    features_path: Path
    coords_path: Path


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def resolve_paths(job: SlideJob, config: Config) -> tuple[Path, Path]:
    """Where this slide's features and coords are; FeatureError listing the places looked at."""
    fdir = config.features_dir
    sid = job.slide_id
    if job.features_path is not None:
        feat_candidates = [job.features_path]
    elif fdir is not None:
        feat_candidates = [
            fdir / f"{sid}.pt",
            fdir / "pt_files" / f"{sid}.pt",
            fdir / f"{sid}.h5",
            fdir / "h5_files" / f"{sid}.h5",
        ]
    else:
        feat_candidates = []
    features_path = _first_existing(feat_candidates)
    if features_path is None:
        looked = (
            ", ".join(str(p) for p in feat_candidates) or "nowhere (no data_arguments.features_dir)"
        )
        raise FeatureError(f"features not found for slide {sid}: looked at {looked}")

    if job.coords_path is not None:
        coord_candidates = [job.coords_path]
    else:
        coord_candidates = []
        if features_path.suffix == ".h5":
            coord_candidates.append(features_path)
        if fdir is not None:
            # features_dir may be CLAM's pt_files/ itself, with coords in the sibling h5_files/
            coord_candidates += [
                fdir / f"{sid}.h5",
                fdir / "h5_files" / f"{sid}.h5",
                fdir.parent / "h5_files" / f"{sid}.h5",
            ]
        coord_candidates.append(features_path.with_suffix(".h5"))
    coords_path = _first_existing(coord_candidates)
    if coords_path is None:
        looked = ", ".join(dict.fromkeys(str(p) for p in coord_candidates))
        raise FeatureError(
            f"coordinates not found for slide {sid}: looked at {looked} "
            "(an .h5 file with a 'coords' dataset)"
        )
    return features_path, coords_path


def _load_pt(path: Path) -> np.ndarray:
    import torch  # scoring-only dependency; kept local so that this module stays light to import

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FeatureError(
            f"{path}: cannot read features as a torch file ({type(exc).__name__}: {exc}); "
            "expected a tensor saved with torch.save"
        ) from None
    if isinstance(obj, dict):
        obj = obj.get("features", obj.get("feats"))
    if not isinstance(obj, torch.Tensor):
        raise FeatureError(
            f"{path}: expected a tensor of shape (N, D) (or a dict with 'features'), "
            f"got {type(obj).__name__}"
        )
    return obj.detach().to(torch.float32).numpy()


def _load_h5_features(path: Path) -> np.ndarray:
    try:
        with h5py.File(path, "r") as fh:
            if "features" not in fh:
                raise FeatureError(
                    f"{path}: no 'features' dataset (found: {', '.join(fh.keys()) or 'nothing'})"
                )
            ds = fh["features"]
            if not np.issubdtype(ds.dtype, np.number):
                raise FeatureError(f"{path}: 'features' must be numeric, got {ds.dtype}")
            feats = np.empty(ds.shape, np.float32)  # HDF5 converts float16/float64 while reading:
            ds.read_direct(feats)  # no second bag-sized copy
            return feats
    except OSError as exc:
        raise FeatureError(f"{path}: cannot read as HDF5: {exc}") from None


def load_features(path: Path) -> np.ndarray:
    """(N, D) float32 features, a leading batch axis of 1 squeezed away (CLAM saves (1, N, D) too)."""
    feats = _load_pt(path) if path.suffix in (".pt", ".pth") else _load_h5_features(path)
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise FeatureError(
            f"{path}: features must have shape (N, D) with N >= 1, got {tuple(feats.shape)}"
        )
    step = max(
        1, (1 << 22) // max(1, feats.shape[1])
    )  # a 16 MB slice at a time, not a bag-sized mask
    if not all(np.isfinite(feats[r : r + step]).all() for r in range(0, feats.shape[0], step)):
        raise FeatureError(f"{path}: features contain NaN or infinite values")
    return feats


def _attr(ds: h5py.Dataset, fh: h5py.File, name: str) -> object | None:
    if name in ds.attrs:
        return ds.attrs[name]
    return fh.attrs.get(name)


def load_coords(
    path: Path, level_downsamples: Sequence[float], config: Config
) -> tuple[np.ndarray, int]:
    """Level-0 top-left coords and the level-0 patch size, from CLAM or TRIDENT attributes."""
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise FeatureError(f"{path}: cannot read as HDF5: {exc}") from None
    with fh:
        if "coords" not in fh:
            raise FeatureError(
                f"{path}: no 'coords' dataset (found: {', '.join(fh.keys()) or 'nothing'})"
            )
        ds = fh["coords"]
        coords = np.asarray(ds[()])
        trident = _attr(ds, fh, "patch_size_level0")
        clam_size = _attr(ds, fh, "patch_size")
        clam_level = _attr(ds, fh, "patch_level")
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise FeatureError(f"{path}: coords must have shape (N, 2), got {tuple(coords.shape)}")
    if not np.issubdtype(coords.dtype, np.number) or not np.isfinite(coords).all():
        raise FeatureError(f"{path}: coords must be finite numbers")
    coords = np.rint(coords).astype(np.int64)

    def at_level(size: object, level: object, what: str) -> int:
        lvl = int(np.asarray(level).item()) if level is not None else 0
        if not 0 <= lvl < len(level_downsamples):
            raise FeatureError(
                f"{path}: {what} patch_level {lvl} does not exist in the slide "
                f"({len(level_downsamples)} levels)"
            )
        return round(float(np.asarray(size).item()) * level_downsamples[lvl])

    if config.patch_size_level0 is not None:
        l0_patch = config.patch_size_level0
    elif trident is not None:
        l0_patch = round(float(np.asarray(trident).item()))
    elif clam_size is not None:
        l0_patch = at_level(clam_size, clam_level, "coords attribute")
    elif config.fallback_patch_size is not None:
        l0_patch = at_level(
            config.fallback_patch_size, config.fallback_patch_level, "patching_arguments"
        )
    else:
        raise FeatureError(
            f"{path}: cannot tell the level-0 patch size: the coords dataset has neither "
            "TRIDENT's 'patch_size_level0' nor CLAM's 'patch_size'/'patch_level' attributes; set "
            "data_arguments.patch_size_level0 in the config"
        )
    if l0_patch < 1:
        raise FeatureError(f"{path}: level-0 patch size must be positive, got {l0_patch}")
    _warn_on_gaps(
        path, coords, l0_patch, clam_size is not None and clam_level is None and trident is None
    )
    return coords, l0_patch


def _warn_on_gaps(path: Path, coords: np.ndarray, l0_patch: int, level_assumed: bool) -> None:
    """Patches on a lattice with a step larger than the patch size leave gaps in every heatmap:
    usually a patch size read at the wrong level (e.g. TRIDENT coords without patch_size_level0)."""
    xs = np.unique(coords[:, 0])
    if len(xs) < 3:
        return
    step = int(np.median(np.diff(xs)))
    if step > 1.5 * l0_patch:
        hint = " (no patch_level attribute: level 0 was assumed)" if level_assumed else ""
        log.warning(
            "%s: coords lie %d px apart but the level-0 patch size is %d%s; if patches should tile "
            "the tissue, set data_arguments.patch_size_level0",
            path,
            step,
            l0_patch,
            hint,
        )


def load_bag(
    job: SlideJob,
    config: Config,
    level_downsamples: Sequence[float],
    l0_dimensions: tuple[int, int],
) -> Bag:
    """Features and coords for one slide, checked against each other and against the slide."""
    features_path, coords_path = resolve_paths(job, config)
    features = load_features(features_path)
    coords, l0_patch = load_coords(coords_path, level_downsamples, config)
    if len(coords) != len(features):
        raise FeatureError(
            f"slide {job.slide_id}: {features_path} has {len(features)} feature rows but "
            f"{coords_path} has {len(coords)} coords; they must describe the same patches"
        )
    width, height = l0_dimensions
    outside = (
        (coords[:, 0] < 0) | (coords[:, 1] < 0) | (coords[:, 0] >= width) | (coords[:, 1] >= height)
    )
    if outside.any():
        x, y = coords[np.argmax(outside)]
        raise FeatureError(
            f"slide {job.slide_id}: {int(outside.sum())} coords in {coords_path} lie outside the "
            f"slide ({width}x{height} at level 0), e.g. ({x}, {y}); are they another slide's?"
        )
    return Bag(
        features=features,
        l0_coords=coords,
        l0_patch=l0_patch,
        features_path=features_path,
        coords_path=coords_path,
    )
