"""What one viewer process holds: the cohort, its settings, and the one cache of everything loaded.

One `ViewerState` per Flask app (per gunicorn worker), reached from routes via `viewer_state()`.
Routes stay a few lines because the lookups that can fail (unknown slide, unreadable slide,
class without attention) raise the viewer's error types here.

Open slides, blockmaps (with their derivations: normalised scores, ranks, score pyramids) and
encoded images all live in one `scoremap.cache.ByteLRU`, bounded in bytes (`CACHE_BYTES`), with one
load in flight per key. Keys carry the file's identity (inode, size, mtime), so a rescored
blockmap or a replaced slide is read afresh, never served from an older entry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openslide
import shapely
from flask import current_app, has_request_context, request

from scoremap.annotations import (
    AnnotatedClass,
    AnnotationError,
    annotation_file,
    polygons_only,
    read_annotations,
)
from scoremap.blockmap import BlockmapError, read_blockmap
from scoremap.cache import ByteLRU, file_identity
from scoremap.defaults import VIEWER_SETTINGS
from scoremap.slide_paths import is_under
from viewer.cohort import Cohort, SlideRecord
from viewer.errors import NotFound, SlideForbidden, SlideUnreadable, ViewerConfigError
from viewer.geometry import DeepZoomGeometry
from viewer.scores import SlideScores
from viewer.slides import OPEN_SLIDE_BYTES, OpenedSlide, SlideInfo

EXTENSION_KEY = "mil_viewer"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The viewer's settings: one field per key of `scoremap.defaults.VIEWER_SETTINGS` (lower case)."""

    tile_size: int
    tile_overlap: int
    limit_bounds: bool
    jpeg_quality: int
    tile_max_age: int
    default_cmap: str
    default_norm: str
    thumbnail_size: int
    topk_max: int
    cache_bytes: int
    openslide_cache_bytes: int
    cohort_budget_s: float

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> Settings:
        """Each setting from `config` (an app config: defaults, environment, caller), converted
        to its default's type; ViewerConfigError naming the key when it does not convert."""
        values: dict[str, Any] = {}
        for key, default in VIEWER_SETTINGS.items():
            value = config.get(key, default)
            kind = type(default)
            try:
                if kind is bool:
                    if isinstance(value, str):
                        value = {"1": True, "true": True, "0": False, "false": False}[value.lower()]
                    converted = bool(value)
                else:
                    converted = kind(value)
            except (KeyError, TypeError, ValueError):
                raise ViewerConfigError(f"{key} must be {kind.__name__}, got {value!r}") from None
            if kind in (int, float) and not converted >= 0:
                raise ViewerConfigError(f"{key} must be >= 0, got {converted}")
            values[key.lower()] = converted
        return cls(**values)

    def as_mapping(self) -> dict[str, Any]:
        return {f.name.upper(): getattr(self, f.name) for f in dataclasses.fields(self)}


class ViewerState:
    """The experiments served (one Cohort each, in the order given; the first is the default),
    the ground-truth folder, the settings and the cache."""

    def __init__(
        self,
        experiments: Cohort | Sequence[Cohort],
        settings: Settings,
        annotations_dir: Path | None = None,
    ):
        cohorts = [experiments] if isinstance(experiments, Cohort) else list(experiments)
        self.experiments: dict[str, Cohort] = {c.experiment: c for c in cohorts}
        self.cohort = cohorts[0]  # the default experiment
        self.annotations_dir = (
            annotations_dir if annotations_dir is not None else self.cohort.annotations_dir
        )
        self.settings = settings
        self.cache = ByteLRU(settings.cache_bytes)
        self._tile_cache: openslide.OpenSlideCache | None = None
        self._tile_cache_pid: int | None = None
        self._geometries: dict[str, tuple[SlideInfo, DeepZoomGeometry]] = {}

    @property
    def compared(self) -> bool:
        """Whether several experiments are served (URLs then name the experiment they belong to)."""
        return len(self.experiments) > 1

    def experiment(self, name: str) -> Cohort:
        found = self.experiments.get(name)
        if found is None:
            raise NotFound(
                f"unknown experiment {name[:200]!r}; this viewer serves {', '.join(self.experiments)}"
            )
        return found

    def record(self, slide_id: str, exp: str | None = None) -> SlideRecord:
        """The slide's record in experiment `exp`: by default the request's `exp` parameter, else
        the first experiment that scored the slide (so every route takes `?exp=` alike)."""
        if exp is None and has_request_context():
            exp = request.args.get("exp") or None
        if exp is not None:
            cohort = self.experiment(exp)
            if slide_id not in cohort:
                others = [name for name, c in self.experiments.items() if slide_id in c]
                if others:
                    raise NotFound(
                        f"experiment {exp!r} did not score slide {slide_id[:200]!r} "
                        f"(scored by {', '.join(others)})"
                    )
            return cohort.get(slide_id)
        for cohort in self.experiments.values():
            if slide_id in cohort:
                return cohort.get(slide_id)
        raise NotFound(f"unknown slide {slide_id[:200]!r}")

    def records(self, slide_id: str) -> dict[str, SlideRecord]:
        """The slide's record in every experiment that scored it, in experiment order."""
        found = {name: c.get(slide_id) for name, c in self.experiments.items() if slide_id in c}
        if not found:
            raise NotFound(f"unknown slide {slide_id[:200]!r}")
        return found

    def slide_ids(self) -> list[str]:
        """Every slide once, in the first experiment's order, then the slides only later ones scored."""
        seen: dict[str, None] = {}
        for cohort in self.experiments.values():
            seen.update((sid, None) for sid in cohort.records)
        return list(seen)

    def primary_records(self) -> list[SlideRecord]:
        """One record per slide: from the first experiment that scored it."""
        return [
            self.record(sid, next(n for n, c in self.experiments.items() if sid in c))
            for sid in self.slide_ids()
        ]

    def geometry(self, record: SlideRecord) -> DeepZoomGeometry:
        """The Deep Zoom geometry of a readable slide (from metadata; opens nothing)."""
        _, info = record.require_slide()
        found = self._geometries.get(record.slide_id)
        if found is None or found[0] is not info:  # the slide was probed again (replaced, restored)
            s = self.settings
            found = (info, info.geometry(s.tile_size, s.tile_overlap, s.limit_bounds))
            self._geometries[record.slide_id] = found
        return found[1]

    def _openslide_cache(self) -> openslide.OpenSlideCache | None:
        """One OpenSlideCache per process (made after a gunicorn fork, never inherited)."""
        if self._tile_cache_pid != os.getpid():
            self._tile_cache_pid = os.getpid()
            s = self.settings.openslide_cache_bytes
            self._tile_cache = openslide.OpenSlideCache(s) if s > 0 else None
        return self._tile_cache

    def _slide_key(self, record: SlideRecord) -> tuple:
        path, _ = record.require_slide()
        return ("slide", file_identity(path))

    def opened(self, record: SlideRecord) -> OpenedSlide:
        path, _ = record.require_slide()
        if not is_under(
            path, record.roots or self.cohort.roots
        ):  # swapped for a symlink out of the roots since
            raise SlideForbidden(
                f"slide {record.slide_id!r} lies outside the configured slide folders"
            )
        s = self.settings

        def load():
            opened = OpenedSlide(
                path, self._openslide_cache(), s.tile_size, s.tile_overlap, s.limit_bounds
            )
            return opened, OPEN_SLIDE_BYTES

        try:
            return self.cache.get(self._slide_key(record), load)
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
            self.cache.discard(self._slide_key(record))
            raise

    def image(self, record: SlideRecord, key: tuple, make: Callable[[], bytes]) -> bytes:
        """An encoded image of the slide (thumbnail, patch), made once per slide file and kept."""

        def load():
            body = make()
            return body, len(body)

        return self.cache.get(("image", file_identity(record.slide_path), *key), load)

    def prefetch(self, record: SlideRecord) -> None:
        """Load a slide's scores and prepare its default heatmap in a background thread.

        The viewer page asks for the metadata and the first overlay tiles a few hundred
        milliseconds after its HTML (scripts, OpenSeadragon, the .dzi come first); a million-patch
        bag needs about that long to be read, indexed, ranked and planned into a pyramid. Started
        when the page is served, that work overlaps the browser's, and the requests that need it
        join the load in flight (the cache's single flight) instead of starting their own.
        Failures are left for those requests to report.
        """
        if not record.readable:
            return
        key = ("prefetched", record.slide_id, file_identity(record.blockmap_path))
        if key in self.cache:
            return
        self.cache.get(key, lambda: (True, 0))

        def work() -> None:
            try:
                scores = self.slide_scores(record)
                scores.source(
                    scores.blockmap.pred, self.settings.default_norm, self.geometry(record)
                )
            except Exception:
                log.debug("prefetch of %s failed", record.slide_id, exc_info=True)

        threading.Thread(target=work, name=f"prefetch-{record.slide_id}", daemon=True).start()

    def annotation_path(self, record: SlideRecord) -> Path | None:
        """The slide's ground-truth file, if the viewer has a folder and it holds one."""
        folder = self.annotations_dir
        name = Path(record.recorded_slide_path).name if record.recorded_slide_path else None
        return annotation_file(folder, record.slide_id, name) if folder is not None else None

    def annotations(
        self, record: SlideRecord
    ) -> tuple[list[AnnotatedClass], str | None, str | None]:
        """(classes, file name, problem) of the slide's ground truth: no folder or no file gives
        ([], None, None); a file that cannot be read gives ([], its name, why), and the slide
        shows without it."""
        path = self.annotation_path(record)
        if path is None:
            return [], None, None

        def load():
            try:
                classes = read_annotations(path)
                if (
                    record.info is not None
                ):  # the slide's pixels only: a polygon run past the edge counts its inside
                    w, h = record.info.dimensions
                    frame = shapely.box(0, 0, w, h)
                    classes = [
                        dataclasses.replace(
                            c, geometry=polygons_only(c.geometry.intersection(frame))
                        )
                        for c in classes
                    ]
                    classes = [c for c in classes if c.area > 0]
                size = 16 * sum(int(shapely.get_num_coordinates(c.geometry)) for c in classes)
                return (classes, path.name, None), size
            except AnnotationError as exc:
                log.warning("%s", exc)
                return ([], path.name, str(exc).replace(str(path.parent) + os.sep, "")), 0

        return self.cache.get(("annotations", file_identity(path), record.slide_stamp), load)

    def slide_scores(self, record: SlideRecord) -> SlideScores:
        key = ("scores", file_identity(record.blockmap_path))

        def load():
            scores = SlideScores(read_blockmap(record.blockmap_path), self.cache, key)
            return scores, scores.nbytes

        try:
            return self.cache.get(key, load)
        except BlockmapError as exc:  # deleted or rewritten badly since the cohort loaded
            raise NotFound(
                f"scores of slide {record.slide_id!r} are not readable: {exc.reason}"
            ) from None


def viewer_state() -> ViewerState:
    return current_app.extensions[EXTENSION_KEY]
