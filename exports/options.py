"""What an export colours and selects: the overlay tiles' options, checked once for every slide.

`--norm percentile|raw`, `--class NAME|INDEX` (default: the predicted class), `--cmap NAME` and
`--threshold T` on the 0..1 normalised scale mean what the same query parameters of
`/overlay/...` tiles mean, so an export shows what the viewer showed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoremap.blockmap import Blockmap
from scoremap.defaults import OVERLAY
from scoremap.normalize import NORMS, percent, rank_order, ranks

CLASS_PREFIX = "attention_"


class ExportError(ValueError):
    """A bad option or a slide that cannot be exported; the message names which."""


@dataclass(frozen=True)
class ExportOptions:
    norm: str = OVERLAY["norm"]
    class_ref: str | None = None  # a class name or index; None: the predicted class
    cmap: str = OVERLAY["cmap"]
    threshold: float | None = None  # regions (and tiff transparency) at normalised score >= T

    def class_index(self, bm: Blockmap) -> int:
        """The class to export for this slide; ExportError when the slide has no such class."""
        if self.class_ref is None:
            return bm.pred
        ref = self.class_ref
        index = bm.class_names.index(ref) if ref in bm.class_names else None
        if index is None and ref.isdigit():
            index = int(ref)
        if index is None or not 0 <= index < bm.n_classes:
            raise ExportError(
                f"--class {ref!r}: slide {bm.slide_id} has classes "
                f"{', '.join(f'{i} ({n})' for i, n in enumerate(bm.class_names))}"
            )
        if index != bm.pred and bm.attention_per_class is None:
            raise ExportError(
                f"--class {ref!r}: {bm.model_type} stores attention for the predicted class "
                f"({bm.class_names[bm.pred]}) only"
            )
        return index


@dataclass(frozen=True)
class ExportScores:
    """One slide's scores as exports use them: raw, normalised, percentile, rank, per class."""

    blockmap: Blockmap
    class_index: int
    raw: np.ndarray
    values01: np.ndarray  # by the chosen normalisation
    percentile: np.ndarray  # 0..100
    rank: np.ndarray  # 1 = most attended

    @classmethod
    def of(cls, bm: Blockmap, options: ExportOptions) -> ExportScores:
        from scoremap.normalize import normalize_scores

        if options.norm not in NORMS:
            raise ExportError(f"--norm {options.norm!r}: expected one of {', '.join(NORMS)}")
        index = options.class_index(bm)
        raw = bm.scores_for_class(index)
        order, percentile01 = rank_order(raw)
        values01 = (
            percentile01 if options.norm == "percentile" else normalize_scores(raw, options.norm)
        )
        return cls(bm, index, raw, values01, percent(percentile01), ranks(order))
