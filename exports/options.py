"""What an export colours and selects: the overlay tiles' options, checked by the same rules.

`--norm percentile|raw`, `--class NAME|INDEX` (default: the predicted class), `--cmap NAME` and
`--threshold T` on the 0..1 normalised scale mean what the same query parameters of
`/overlay/...` tiles mean, so an export shows what the viewer showed; both check them with
`scoremap.params` (the command before any slide is written, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoremap.blockmap import Blockmap
from scoremap.defaults import OVERLAY
from scoremap.normalize import rank_order, ranks
from scoremap.params import resolve_class

CLASS_PREFIX = "attention_"
CLASS_OPTION = "--class"  # how the command spells the class a resolution error names


class ExportError(ValueError):
    """A bad option or a slide that cannot be exported; the message names which."""


@dataclass(frozen=True)
class ExportOptions:
    """Checked by the caller (the command's options, the viewer's query) with `scoremap.params`."""

    norm: str = OVERLAY["norm"]
    class_ref: str | int | None = None  # a class name or index; None: the predicted class
    cmap: str = OVERLAY["cmap"]
    threshold: float | None = None  # regions (and tiff transparency) at normalised score >= T


@dataclass(frozen=True)
class ExportScores:
    """One slide's scores as exports use them: raw, normalised, percentile, rank, per class."""

    blockmap: Blockmap
    class_index: int
    raw: np.ndarray
    values01: np.ndarray  # by the chosen normalisation
    percentile01: np.ndarray  # 0..1, the core's unit (the files show 0..100: `percent`)
    rank: np.ndarray  # 1 = most attended

    @classmethod
    def of(cls, bm: Blockmap, options: ExportOptions) -> ExportScores:
        """ParameterError (`scoremap.params.resolve_class`, as `--class`) when the slide has no
        attention for the class."""
        from scoremap.normalize import normalize_scores

        index = resolve_class(bm, options.class_ref, CLASS_OPTION)
        raw = bm.scores_for_class(index)
        order, percentile01 = rank_order(raw)
        values01 = (
            percentile01 if options.norm == "percentile" else normalize_scores(raw, options.norm)
        )
        return cls(bm, index, raw, values01, percentile01, ranks(order))
