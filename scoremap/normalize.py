"""Raw attention to [0, 1], so that one colormap scale fits every slide and every model.

Attention logits of different models and slides differ wildly in scale (ABMIL logits, DSMIL
softmax weights, TransMIL dot products); CLAM's heatmaps normalise them per slide before colouring,
and so does every view here.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

NormalizeMode = Literal["percentile", "raw"]
NORMS: tuple[str, ...] = ("percentile", "raw")
#: How each normalisation is named and explained wherever a user picks one.
NORM_LABELS = {
    "percentile": ("Percentile", "Each score's percentile in this slide (CLAM's convert_to_percentiles)"),
    "raw": ("Raw", "Raw attention scores, min-max scaled"),
}


def normalize_scores(scores: np.ndarray, mode: NormalizeMode) -> np.ndarray:
    """Map scores to [0, 1] so that one colormap scale fits every slide and model.

    `percentile` (CLAM's `convert_to_percentiles`): each score's percentile among all scores,
    ties sharing their average rank; equal to `scipy.stats.percentileofscore(scores, s,
    kind='rank') / 100` for every s, but O(N log N) for the whole bag instead of O(N^2).
    Attention logits of different models and slides differ wildly in scale; percentiles make
    heatmaps comparable and give full contrast.

    `raw`: min-max scaling, which keeps the relative spacing of the scores (a few outliers
    stand out). A constant bag maps to 0.5: nothing is more or less attended than the rest.
    NaN scores stay NaN (they are not painted).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"scores must have shape (N,) or (N, 1), got {values.shape}")
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    kept = values[finite]
    if kept.size == 0:
        return out
    if mode == "percentile":
        out[finite] = stats.rankdata(kept, method="average") / kept.size
    elif mode == "raw":
        lo, hi = float(kept.min()), float(kept.max())
        out[finite] = 0.5 if hi <= lo else (kept - lo) / (hi - lo)
    else:
        raise ValueError(f"normalisation mode must be 'percentile' or 'raw', got {mode!r}")
    return out
