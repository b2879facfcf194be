"""What a per-slide request selects, read from its query in one way for every route.

The histogram, the regions and the exports all answer for "this slide's scores, in this class and
normalisation, coloured so": the slide record, its scores, the overlay parameters of the query
(`viewer.params.OverlayParams`, the same as the overlay tiles read), the class they resolve to and
the normalised values. One reader keeps a route from accepting a parameter another refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flask import request

from viewer.cohort import SlideRecord
from viewer.params import OverlayParams
from viewer.scores import SlideScores
from viewer.state import ViewerState, viewer_state


@dataclass(frozen=True)
class Selection:
    state: ViewerState
    record: SlideRecord
    scores: SlideScores
    params: OverlayParams
    class_index: int

    @property
    def values(self) -> np.ndarray:
        """The selected class's scores on 0..1 (NaN where a patch has none), cached per class."""
        return self.scores.normalized(self.class_index, self.params.norm)

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per level-0 pixel of the slide (x, y), where it says (areas in mm²)."""
        info = self.record.info
        return info.mpp if info is not None else None


def selection(slide_id: str) -> Selection:
    """The slide's scores as the query selects them (4xx for an unknown slide or parameter)."""
    state = viewer_state()
    record = state.record(slide_id)
    scores = state.slide_scores(record)
    params = OverlayParams.from_query(
        request.args, state.settings.default_cmap, state.settings.default_norm
    )
    return Selection(state, record, scores, params, scores.resolve_class(params.class_ref))
