"""Does the attention fall on the annotated tissue? Per annotated class, three figures.

- AUROC of the patches' attention against "the patch centre lies inside an annotation of the
  class" (the Mann-Whitney U statistic over the two groups, ties counted half: what
  `sklearn.metrics.roc_auc_score` computes), None when every patch is inside or none is;
- the fraction of the top-k attended patches (`normalize.descending_order`: ties in bag order)
  whose centre is inside, for k = 10 and for the top 5 % of the scored patches (at least one);
- the Dice overlap of the thresholded region (the union of the squares of the patches whose
  normalised score lies in [lo, hi]: at or above a threshold, or in the range the page shows)
  with the annotation: 2 |R n A| / (|R| + |A|).
CAMELYON16-style localisation checks of attention, per slide; the viewer averages them over the
cohort.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from scipy import stats
from shapely.geometry.base import BaseGeometry

from scoremap.annotations import AnnotatedClass
from scoremap.normalize import descending_order, in_range
from scoremap.regions import union_geometry


def centres_inside(l0_coords: np.ndarray, l0_patch: int, geometry: BaseGeometry) -> np.ndarray:
    centres = np.asarray(l0_coords, np.float64) + l0_patch / 2.0
    return shapely.contains_xy(geometry, centres[:, 0], centres[:, 1])


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    scores = np.asarray(scores, np.float64)
    keep = np.isfinite(scores)
    scores, positive = scores[keep], np.asarray(positive, bool)[keep]
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return None
    u = stats.mannwhitneyu(scores[positive], scores[~positive], alternative="two-sided").statistic
    return float(u / (n1 * n0))


def localization(
    l0_coords: np.ndarray,
    l0_patch: int,
    raw: np.ndarray,
    values01: np.ndarray,
    annotated: AnnotatedClass,
    threshold: float,
    hi: float = 1.0,
) -> dict[str, Any]:
    inside = centres_inside(l0_coords, l0_patch, annotated.geometry)
    order = descending_order(raw)[: int(np.isfinite(raw).sum())]  # the scored patches
    k5 = max(1, math.ceil(0.05 * len(order)))
    top = {str(k): (float(inside[order[:k]].mean()) if len(order) else None) for k in (10,)} | {
        "5%": float(inside[order[:k5]].mean()) if len(order) else None
    }
    chosen = in_range(values01, threshold, hi)
    region = union_geometry(np.asarray(l0_coords)[chosen], l0_patch)
    denominator = region.area + annotated.area
    dice = (
        2 * region.intersection(annotated.geometry).area / denominator if denominator > 0 else None
    )
    return {
        "class": annotated.name,
        "auroc": auroc(raw, inside),
        "top_inside": top,
        "top_5pct_k": k5,
        "dice": None if dice is None else float(dice),
        "threshold": float(threshold),
        "hi": float(hi),
        "patches_inside": int(inside.sum()),
        "annotated_area_px": annotated.area,
    }
