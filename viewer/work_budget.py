"""A time budget for cohort-wide answers (every slide's agreement or localisation figures).

A cohort of hundreds of million-patch slides takes about a second a slide to compute cold; one
request doing all of it would outlive gunicorn's worker timeout and hold a thread for minutes.
Cohort routes instead answer with what is cached plus what they can compute within the
`COHORT_BUDGET_S` setting (scoremap.defaults), and list the other slides as `pending`; the page
asks again until none is left, filling the table as figures arrive. Each request computes at
least one slide, so it always ends.
"""

from __future__ import annotations

import time


class WorkBudget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.started = False
        self.pending: list[str] = []

    def allows(self, item: str) -> bool:
        """Whether to compute `item` now (the first always); else it is noted as pending."""
        if not self.started or time.monotonic() < self.deadline:
            self.started = True
            return True
        self.pending.append(item)
        return False
