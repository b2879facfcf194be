"""Sampled patches: the top, bottom or a score band of a slide's patches, saved at full resolution.

A pathologist checks what the model attends to by looking at the patches themselves, so they are
read at level 0 and named so that sorting a folder by name keeps the selection order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from scoremap.atomic import atomic_output
from scoring.config import SampleSpec


def select_indices(scores: np.ndarray, spec: SampleSpec) -> np.ndarray:
    """Indices into `scores` chosen by the spec, in the order their files are numbered."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = min(spec.k, len(scores))
    if spec.mode == "topk":
        return np.argsort(-scores, kind="stable")[:k]
    if spec.mode == "bottomk":
        return np.argsort(scores, kind="stable")[:k]
    if spec.mode == "range_sample":
        lo, hi = np.quantile(scores, [spec.score_start, spec.score_end])
        candidates = np.flatnonzero((scores >= lo) & (scores <= hi))
        rng = np.random.default_rng(spec.seed)
        chosen = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
        return chosen[np.argsort(-scores[chosen], kind="stable")]
    raise ValueError(f"unknown sample mode {spec.mode!r}")


def patch_filename(i: int, slide_id: str, x: int, y: int, score: float) -> str:
    return f"{i}_{slide_id}_x_{x}_y_{y}_score_{score:.4f}.png"


def save_samples(
    slide: openslide.AbstractSlide,
    slide_id: str,
    scores: np.ndarray,
    l0_coords: np.ndarray,
    l0_patch: int,
    spec: SampleSpec,
    out_dir: Path,
) -> list[Path]:
    """Write the chosen patches (level-0 pixels) as PNGs; each file appears complete or not at all."""
    written: list[Path] = []
    for i, idx in enumerate(select_indices(scores, spec)):
        x, y = (int(v) for v in l0_coords[idx])
        final = Path(out_dir) / patch_filename(i, slide_id, x, y, float(scores[idx]))
        tile = slide.read_region((x, y), 0, (l0_patch, l0_patch)).convert("RGB")
        with atomic_output(final) as tmp:
            tile.save(tmp, format="PNG")
        written.append(final)
    return written
