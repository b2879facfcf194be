"""A small scored cohort on real slides, for the viewer tests (the fixtures are in conftest.py).

Layout built under one temporary root:

    slides/CMU-1-Small-Region.svs      the real CMU scan (copied: a symlink would leave the root)
    slides/pyramid.tiff                 a 6000x4500 4-level generic tiled TIFF of real tissue
    slides/escape.svs -> outside/...    a symlink out of the slide root (must not be served)
    slides/not-a-slide.svs              bytes OpenSlide refuses
    outside/secret.svs                  a readable slide outside the root
    raw/EXP/{label}/{slide_id}/{slide_id}_blockmap.h5
    production/EXP/results.csv
    config.yaml                          a scoring config whose data_dir is slides/

Patches lie on a lattice over part of each slide, plus an isolated patch at odd coordinates
(registration checks need transparent pixels on every side of it) and two overlapping patches
(averaging checks). Scores are deterministic.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoremap.blockmap import Blockmap, blockmap_path, write_blockmap

PATCH = 256
EXP = "EXP"
CLASS_NAMES = ["normal", "tumor"]


@dataclass(frozen=True)
class ScoredSlide:
    slide_id: str
    label: str
    slide_path: Path
    blockmap: Path
    l0_coords: np.ndarray
    scores: np.ndarray  # predicted-class attention
    per_class: np.ndarray | None
    isolated: int  # index of the isolated patch
    overlap_pair: tuple[int, int]  # indices of two patches that overlap


@dataclass(frozen=True)
class ViewerCohort:
    root: Path
    slides_dir: Path
    raw_dir: Path  # raw/EXP
    config: Path
    scored: dict[str, ScoredSlide]


def lattice_with_extras(
    width: int,
    height: int,
    region: tuple[int, int, int, int],
    isolated: tuple[int, int],
    overlap_at: tuple[int, int],
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Lattice patches (step = PATCH) inside `region` (x0, y0, x1, y1) with a hole, an isolated
    patch and two patches overlapping by half; returns coords, isolated index, overlap indices."""
    x0, y0, x1, y1 = region
    xs = np.arange(x0, x1 - PATCH + 1, PATCH)
    ys = np.arange(y0, y1 - PATCH + 1, PATCH)
    grid = np.array([(x, y) for y in ys for x in xs], dtype=np.int64)
    # a hole in the lattice: tissue is never a full rectangle
    hole = (grid[:, 0] == xs[len(xs) // 2]) & (grid[:, 1] == ys[len(ys) // 2])
    grid = grid[~hole]
    ox, oy = overlap_at
    extras = np.array([isolated, (ox, oy), (ox + PATCH // 2, oy)], dtype=np.int64)
    coords = np.concatenate([grid, extras]).astype(np.int32)
    n = len(grid)
    return coords, n, (n + 1, n + 2)


def make_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_class = rng.normal(size=(n, len(CLASS_NAMES))).astype(np.float32)
    return per_class[:, 1].copy(), per_class


def write_scored(
    raw_dir: Path,
    slide_id: str,
    label: str,
    slide_path: str | Path,
    coords: np.ndarray,
    seed: int,
    per_class: bool = True,
    model_type: str = "clam_mb",
) -> tuple[Path, np.ndarray, np.ndarray | None]:
    scores, all_classes = make_scores(len(coords), seed)
    path = blockmap_path(raw_dir, label, slide_id)
    write_blockmap(
        path,
        Blockmap(
            slide_id=slide_id,
            slide_path=str(slide_path),
            label=label,
            model_type=model_type,
            class_names=list(CLASS_NAMES),
            pred=1,
            probs=np.array([0.2, 0.8]),
            logits=np.array([-0.7, 0.7]),
            l0_patch=PATCH,
            attention=scores,
            l0_coords=coords,
            attention_per_class=all_classes if per_class else None,
        ),
    )
    return path, scores, (all_classes if per_class else None)


def build_pyramid(path: Path, cmu_slide: Path, width: int = 6000, height: int = 4500) -> Path:
    """A multi-level slide of real tissue (demo.pyramid), generated once per session."""
    from demo.pyramid import write_pyramid
    from demo.tissue import tissue_source

    return write_pyramid(path, width, height, tissue_source(cmu_slide))


def write_config(path: Path, root: Path, slides_dir: Path) -> Path:
    path.write_text(
        "exp_arguments:\n"
        f"  save_exp_code: {EXP}\n"
        f"  raw_save_dir: {root / 'raw'}\n"
        f"  production_save_dir: {root / 'production'}\n"
        "data_arguments:\n"
        f"  data_dir: {slides_dir}\n"
        "  slide_ext: .svs\n"
        "model_arguments:\n"
        f"  ckpt_path: {root / 'model.pt'}\n"
        "  model_type: clam_mb\n",
        encoding="utf-8",
    )
    return path


def build_cohort(root: Path, cmu_slide: Path) -> ViewerCohort:
    slides = root / "slides"
    outside = root / "outside"
    raw = root / "raw" / EXP
    slides.mkdir(parents=True)
    outside.mkdir()
    cmu = Path(shutil.copy(cmu_slide, slides / "CMU-1-Small-Region.svs"))
    pyramid = build_pyramid(slides / "pyramid.tiff", cmu_slide)
    secret = Path(shutil.copy(cmu_slide, outside / "secret.svs"))
    (slides / "escape.svs").symlink_to(secret)
    (slides / "not-a-slide.svs").write_bytes(b"this is not a whole-slide image\n" * 64)

    scored: dict[str, ScoredSlide] = {}

    def add(
        slide_id: str,
        label: str,
        slide_path: Path | str,
        coords: np.ndarray,
        isolated: int,
        pair: tuple[int, int],
        seed: int,
        per_class: bool = True,
        real: Path | None = None,
    ) -> None:
        bm, scores, pc = write_scored(
            raw,
            slide_id,
            label,
            slide_path,
            coords,
            seed,
            per_class,
            "clam_mb" if per_class else "abmil",
        )
        scored[slide_id] = ScoredSlide(
            slide_id, label, Path(real or slide_path), bm, coords, scores, pc, isolated, pair
        )

    # CMU 2220 x 2967: lattice on the upper part, isolated patch bottom-left, overlap pair right
    coords, iso, pair = lattice_with_extras(
        2220,
        2967,
        (100, 100, 100 + 6 * PATCH, 100 + 5 * PATCH),
        isolated=(301, 2203),
        overlap_at=(1700, 1900),
    )
    add("CMU-1-Small-Region", "tumor", cmu, coords, iso, pair, seed=1)
    # pyramid 6000 x 4500: lattice in the middle, isolated patch at odd coordinates
    coords, iso, pair = lattice_with_extras(
        6000,
        4500,
        (1024, 768, 1024 + 12 * PATCH, 768 + 8 * PATCH),
        isolated=(4801, 3503),
        overlap_at=(600, 3600),
    )
    add("pyramid", "normal", pyramid, coords, iso, pair, seed=2, per_class=False)
    # slides that must not be served
    small = np.array([[0, 0], [256, 0]], dtype=np.int32)
    add("escape", "normal", slides / "escape.svs", small, 0, (0, 1), seed=3)
    add("outside", "normal", secret, small, 0, (0, 1), seed=4)
    add("not-a-slide", "normal", slides / "not-a-slide.svs", small, 0, (0, 1), seed=5)
    add("missing", "normal", slides / "gone.svs", small, 0, (0, 1), seed=6)

    production = root / "production" / EXP
    production.mkdir(parents=True)
    order = ["pyramid", "CMU-1-Small-Region", "not-a-slide", "escape", "outside", "missing"]
    with open(production / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide_id", "label", "bag_size", "Pred_0", "Pred_1", "p_0", "p_1"])
        for sid in order:
            writer.writerow([sid, scored[sid].label, len(scored[sid].scores), 0, 1, "0.2", "0.8"])
    config = write_config(root / "config.yaml", root, slides)
    return ViewerCohort(root, slides, raw, config, scored)
