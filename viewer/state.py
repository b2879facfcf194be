"""What one viewer process holds: the cohort, open slides, scores, small caches, its settings.

One `ViewerState` per Flask app (per gunicorn worker), reached from routes via `viewer_state()`.
Routes stay a few lines because the lookups that can fail (unknown slide, unreadable slide,
class without attention) raise the viewer's error types here.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from flask import current_app

from scoring.blockmap import BlockmapError
from viewer.cohort import Cohort, SlideRecord
from viewer.errors import NotFound, SlideUnreadable
from viewer.geometry import DeepZoomGeometry
from viewer.scores import ScoreStore, SlideScores
from viewer.slides import OpenedSlide, SlideCache

EXTENSION_KEY = "mil_viewer"


@dataclass(frozen=True)
class Settings:
    tile_size: int = 254
    overlap: int = 1
    limit_bounds: bool = True
    jpeg_quality: int = 75
    tile_max_age: int = 3600
    default_cmap: str = "jet"
    default_norm: str = "percentile"
    thumbnail_size: int = 256
    topk_max: int = 1000


class BytesLRU:
    """A tiny thread-safe LRU of encoded images (thumbnails, patch images)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value


class ViewerState:
    def __init__(self, cohort: Cohort, settings: Settings, slide_cache_size: int, openslide_cache_bytes: int,
                 score_cache_size: int):
        self.cohort = cohort
        self.settings = settings
        self.slides = SlideCache(slide_cache_size, openslide_cache_bytes, settings.tile_size,
                                 settings.overlap, settings.limit_bounds)
        self.scores = ScoreStore(score_cache_size)
        self.images = BytesLRU(256)
        self._geometries: dict[str, DeepZoomGeometry] = {}

    def record(self, slide_id: str) -> SlideRecord:
        return self.cohort.get(slide_id)

    def geometry(self, record: SlideRecord) -> DeepZoomGeometry:
        """The Deep Zoom geometry of a readable slide (from metadata; opens nothing)."""
        found = self._geometries.get(record.slide_id)
        if found is None:
            _, info = record.require_slide()
            s = self.settings
            found = info.geometry(s.tile_size, s.overlap, s.limit_bounds)
            self._geometries[record.slide_id] = found
        return found

    def opened(self, record: SlideRecord) -> OpenedSlide:
        path, _ = record.require_slide()
        try:
            return self.slides.get(path)
        except SlideUnreadable as exc:
            record.mark_unreadable(exc.message)
            raise

    def read(self, record: SlideRecord, action: Callable[[OpenedSlide], bytes]) -> bytes:
        """Run a pixel read; a failure marks the slide unreadable and drops its handle."""
        opened = self.opened(record)
        try:
            return action(opened)
        except SlideUnreadable as exc:
            record.mark_unreadable(exc.message)
            self.slides.forget(opened.path)
            raise

    def slide_scores(self, record: SlideRecord) -> SlideScores:
        try:
            return self.scores.get(record.blockmap_path)
        except BlockmapError as exc:  # deleted or rewritten badly since the cohort loaded
            raise NotFound(f"scores of slide {record.slide_id!r} are no longer readable: {exc}") from None


def viewer_state() -> ViewerState:
    return current_app.extensions[EXTENSION_KEY]
