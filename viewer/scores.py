"""A slide's scores as the viewer uses them: normalised per class, ranked, indexed, in a pyramid.

Everything here is derived from the blockmap alone (no slide pixels) and computed once per
(blockmap file, class, normalisation), then reused by every overlay tile and API call: a browser
asks for dozens of tiles per second, and normalising a million scores per tile would dominate the
cost. Every derivation is an entry of the viewer's one byte-bounded cache (`scoremap.cache`), keyed
by the blockmap's file identity, so a long session over a large cohort stays bounded and a rescored
blockmap is never served from an old entry.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from scoremap.blockmap import Blockmap
from scoremap.cache import ByteLRU, array_bytes
from scoremap.defaults import VIEWER_SETTINGS
from scoremap.errors import ParameterError
from scoremap.normalize import in_range, normalize_scores, rank_order, ranks
from scoremap.params import resolve_class
from scoremap.patch_index import PatchIndex
from scoremap.pyramid import ScorePyramid
from scoremap.raster import ScoreSource
from viewer.errors import NotFound
from viewer.geometry import DeepZoomGeometry


@dataclass(frozen=True)
class ClassScores:
    """One class's attention for a slide and what the API reports about each patch."""

    raw: np.ndarray  # (N,) float32 as stored
    percentile: np.ndarray  # (N,) in [0, 1]: CLAM's percentileofscore(kind='rank') / 100
    rank: np.ndarray  # (N,) int: 1 = most attended
    order: np.ndarray  # (N,) patch indices, most attended first

    @property
    def nbytes(self) -> int:  # order is the ranks' entry, counted there
        return array_bytes(self.percentile, self.rank)


class SlideScores:
    """The blockmap of one slide, its patch index, and its cached derivations."""

    def __init__(
        self, blockmap: Blockmap, cache: ByteLRU | None = None, key: Hashable | None = None
    ):
        self.blockmap = blockmap
        self.l0_coords = np.ascontiguousarray(blockmap.l0_coords, dtype=np.int64)
        self.l0_patch = int(blockmap.l0_patch)
        self.index = PatchIndex(self.l0_coords, self.l0_patch)
        # without the viewer's cache (scripts, benches): one of the same size for this slide
        self._cache = cache if cache is not None else ByteLRU(VIEWER_SETTINGS["CACHE_BYTES"])
        self._key = key if key is not None else ("scores", id(self))

    @property
    def nbytes(self) -> int:
        bm = self.blockmap
        return (
            array_bytes(bm.attention, bm.l0_coords, bm.attention_per_class, self.l0_coords)
            + self.index.nbytes
        )

    @property
    def bag_size(self) -> int:
        return self.blockmap.bag_size

    def class_available(self, class_index: int) -> bool:
        """Whether the slide keeps attention for the class (the page greys out the others)."""
        try:
            resolve_class(self.blockmap, class_index)
        except ParameterError:
            return False
        return True

    def resolve_class(self, ref: str | int | None) -> int:
        """The class whose attention to show, by name or index (None: the predicted one); the
        core's ParameterError (a 400) when the slide has none for it."""
        return resolve_class(self.blockmap, ref)

    def raw(self, class_index: int) -> np.ndarray:
        return self.blockmap.scores_for_class(class_index)

    def _ranks(self, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(order, percentile in [0, 1] as float32) of one class, from one sort (`rank_order`)."""

        def load():
            order, percentile = rank_order(self.raw(class_index))
            percentile = percentile.astype(np.float32)
            for array in (order, percentile):
                array.setflags(write=False)
            return (order, percentile), order.nbytes + percentile.nbytes

        return self._cache.get(("ranks", self._key, class_index), load)

    def normalized(self, class_index: int, norm: str) -> np.ndarray:
        """Scores in [0, 1] (NaN kept) by the same normalisation as the static heatmaps."""
        if norm == "percentile":
            return self._ranks(class_index)[1]

        def load():
            values = normalize_scores(self.raw(class_index), norm).astype(np.float32)
            values.setflags(write=False)
            return values, values.nbytes

        return self._cache.get(("normalized", self._key, class_index, norm), load)

    def class_scores(self, class_index: int) -> ClassScores:
        def load():
            order, percentile01 = self._ranks(class_index)
            found = ClassScores(
                raw=self.raw(class_index),
                percentile=percentile01,
                rank=ranks(order),
                order=order,
            )
            return found, found.nbytes

        return self._cache.get(("class_scores", self._key, class_index), load)

    def selected(
        self, class_index: int, norm: str, score_range: tuple[float, float] | None
    ) -> np.ndarray:
        """Normalised scores with the patches outside `score_range` removed (NaN: not shown)."""
        values = self.normalized(class_index, norm)
        if score_range is None:
            return values

        def load():
            kept = np.where(in_range(values, *score_range), values, np.nan).astype(np.float32)
            kept.setflags(write=False)
            return kept, kept.nbytes

        return self._cache.get(("selected", self._key, class_index, norm, score_range), load)

    def pyramid(
        self,
        class_index: int,
        norm: str,
        geometry: DeepZoomGeometry,
        score_range: tuple[float, float] | None = None,
    ) -> ScorePyramid | None:
        """The score pyramid on this Deep Zoom geometry (None: no tile meets many patches)."""
        window = geometry.l0_window()

        def load():
            built = ScorePyramid.build(
                self.l0_coords,
                self.selected(class_index, norm, score_range),
                self.l0_patch,
                window,
                geometry.tile_size,
            )
            return built, (0 if built is None else built.nbytes)

        key = ("pyramid", self._key, class_index, norm, score_range, window, geometry.tile_size)
        return self._cache.get(key, load)

    def source(
        self,
        class_index: int,
        norm: str,
        geometry: DeepZoomGeometry | None = None,
        score_range: tuple[float, float] | None = None,
    ) -> ScoreSource:
        """What the window rasteriser paints this class from (with the pyramid of `geometry`);
        with `score_range`, only the patches whose normalised score lies in it."""
        pyramid = (
            None if geometry is None else self.pyramid(class_index, norm, geometry, score_range)
        )
        return ScoreSource(
            self.l0_coords,
            self.selected(class_index, norm, score_range),
            self.l0_patch,
            self.index,
            pyramid,
        )

    def patch_at(self, l0_x: float, l0_y: float) -> np.ndarray:
        """Indices of patches covering a level-0 point, nearest centre first."""
        hits = self.index.overlapping(
            l0_x, l0_y, np.nextafter(l0_x, np.inf), np.nextafter(l0_y, np.inf)
        )
        if hits.size == 0:
            return hits
        xy = self.l0_coords[hits]
        half = self.l0_patch / 2.0
        inside = (
            (xy[:, 0] <= l0_x)
            & (l0_x < xy[:, 0] + self.l0_patch)
            & (xy[:, 1] <= l0_y)
            & (l0_y < xy[:, 1] + self.l0_patch)
        )
        hits, xy = hits[inside], xy[inside]
        dist = (xy[:, 0] + half - l0_x) ** 2 + (xy[:, 1] + half - l0_y) ** 2
        return hits[np.argsort(dist, kind="stable")]

    def patch(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.bag_size:
            raise NotFound(f"patch {index} out of range 0..{self.bag_size - 1}")
        x, y = self.l0_coords[index]
        return int(x), int(y)
