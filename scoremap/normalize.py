"""Raw attention to [0, 1], so that one colormap scale fits every slide and every model.

Attention logits of different models and slides differ wildly in scale (ABMIL logits, DSMIL
softmax weights, TransMIL dot products); CLAM's heatmaps normalise them per slide before colouring,
and so does every view here.

The one scoring view of a map, from one sort: `descending_order` (most attended first, ties in bag
order), and `rank_order` adds the percentiles read off it, `ranks` the ranks; localisation's and
agreement's top-k, the viewer's read-outs and the exports all take them from here.

Units. Percentiles are fractions in [0, 1] throughout the core, as every normalised score is (the
colormap scale, `convert_to_percentiles`, thresholds and score ranges, the difference pane's
percentile(A) - percentile(B) on -1..1). Only what a person reads as "percentile" is shown in
0..100 (the API's patch read-out and top-k `percentile`, the exports' `percentile` and
`attention_percentile` columns), converted by `percent` where those reports are assembled.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NormalizeMode = Literal["percentile", "raw"]
NORMS: tuple[str, ...] = ("percentile", "raw")
#: How each normalisation is named and explained wherever a user picks one.
NORM_LABELS = {
    "percentile": (
        "Percentile",
        "Each score's percentile in this slide (CLAM's convert_to_percentiles)",
    ),
    "raw": ("Raw", "Raw attention scores, min-max scaled"),
}


def descending_order(scores: np.ndarray) -> np.ndarray:
    """Patch indices from most to least attended: by descending score, ties in bag order (a stable
    descending sort), NaN and infinite scores last, so the finite scores come first."""
    values = _as_vector(scores)
    keyed = np.where(np.isfinite(values), -values, np.inf)  # NaN (and inf) after every finite score
    order = np.argsort(keyed)  # quicksort: 4x faster than a stable sort on a million floats
    sorted_keys = keyed[order]
    new_run = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    if not new_run.all():  # ties (float32 attention of a large bag has some): bag order within each
        run = np.cumsum(new_run) - 1
        order = order[np.argsort(run * len(order) + order)]
    return order


def rank_order(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bag from most to least attended, and each patch's percentile in [0, 1], from one sort.

    `order` is `descending_order`; the percentile is the average rank of a score's ties among the
    finite scores over their count, which is `scipy.stats.rankdata(kind="average") / n` and
    `percentileofscore(kind="rank") / 100` (NaN where the score is NaN), read off the order. The
    viewer needs both for every slide it opens; one stable sort of a million distinct scores
    costs 0.06 s, rankdata and a second sort 0.55 s.
    """
    values = _as_vector(scores)
    order = descending_order(values)
    percentile = np.full(values.shape, np.nan)
    n = int(np.isfinite(values).sum())
    if n:
        ranked = order[:n]  # the finite scores come first
        desc = values[ranked]
        # ties: runs of equal values in the sorted order share the mean of their ascending ranks
        starts = np.flatnonzero(np.r_[True, desc[1:] != desc[:-1]])
        ends = np.r_[starts[1:], n]
        # descending position p has ascending rank n - p; a run [a, b) has ranks n-b+1 .. n-a
        mean_rank = (2 * n - starts - ends + 1) / 2.0
        percentile[ranked] = np.repeat(mean_rank, ends - starts) / n
    return order, percentile


def ranks(order: np.ndarray) -> np.ndarray:
    """Each patch's rank from a `descending_order`: 1 = most attended, NaN scores ranked last."""
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def percent(percentile01: np.ndarray) -> np.ndarray:
    """Percentiles in [0, 1] as reports show them, 0..100 (the dtype kept)."""
    shown: np.ndarray = percentile01 * percentile01.dtype.type(100.0)
    return shown


def _as_vector(scores: np.ndarray) -> np.ndarray:
    """Scores as a 1-D float array: float32 attention stays float32 (sorting it is 3x faster)."""
    values = np.asarray(scores)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"scores must have shape (N,) or (N, 1), got {values.shape}")
    return values


def normalize_scores(scores: np.ndarray, mode: NormalizeMode) -> np.ndarray:
    """Map scores to [0, 1] so that one colormap scale fits every slide and model.

    `percentile` (CLAM's `convert_to_percentiles`): each score's percentile among all scores,
    ties sharing their average rank (`rank_order`); equal to `scipy.stats.percentileofscore(scores,
    s, kind='rank') / 100` for every s, but O(N log N) for the whole bag instead of O(N^2).
    Percentiles make heatmaps of different models and slides comparable and give full contrast.

    `raw`: min-max scaling, which keeps the relative spacing of the scores (a few outliers
    stand out). A constant bag maps to 0.5: nothing is more or less attended than the rest.
    NaN scores stay NaN (they are not painted).
    """
    values = _as_vector(scores)
    if mode == "percentile":
        return rank_order(values)[1]
    if mode != "raw":
        raise ValueError(f"normalisation mode must be 'percentile' or 'raw', got {mode!r}")
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    kept = values[finite]
    if kept.size:
        lo, hi = float(kept.min()), float(kept.max())
        out[finite] = 0.5 if hi <= lo else (kept - lo) / (hi - lo)
    return out


def in_range(values01: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Which patches a score range [lo, hi] (normalised scale) selects: finite and within, both ends
    included (the histogram's read-out, the regions and the overlay all select with this)."""
    values = np.asarray(values01)
    chosen: np.ndarray = np.isfinite(values) & (values >= lo) & (values <= hi)
    return chosen
