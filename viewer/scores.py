"""A slide's scores as the viewer uses them: normalised per class, ranked, indexed by position.

Everything here is derived from the blockmap alone (no slide pixels) and computed once per
(slide, class, normalisation), then reused by every overlay tile and API call: a browser asks
for dozens of tiles per second, and normalising 100k scores per tile would dominate the cost.
Blockmaps are held in a small LRU, so a long session over a large cohort stays bounded.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoring.blockmap import Blockmap, BlockmapError, read_blockmap
from scoring.scoregrid import normalize_scores
from viewer.errors import BadRequest, NotFound

class PatchIndex:
    """Patches sorted by x, to find those overlapping a level-0 box without scanning the bag.

    A tile at the deepest Deep Zoom levels overlaps a handful of patches out of 10^4..10^5; a
    binary search on x narrows to a vertical strip and a mask on y finishes. Patch i covers
    level-0 [x, x + s) x [y, y + s).
    """

    def __init__(self, l0_coords: np.ndarray, l0_patch: int):
        coords = np.asarray(l0_coords, dtype=np.int64)
        self.l0_patch = int(l0_patch)
        self._order = np.argsort(coords[:, 0], kind="stable")
        self._l0_x = coords[self._order, 0]
        self._l0_y = coords[self._order, 1]

    def overlapping(self, l0_x0: float, l0_y0: float, l0_x1: float, l0_y1: float) -> np.ndarray:
        """Indices (into the bag) of patches meeting the half-open box [x0, x1) x [y0, y1)."""
        s = self.l0_patch
        lo = int(np.searchsorted(self._l0_x, l0_x0 - s, side="right"))
        hi = int(np.searchsorted(self._l0_x, l0_x1, side="left"))
        if hi <= lo:
            return np.empty(0, np.int64)
        ys = self._l0_y[lo:hi]
        keep = (ys > l0_y0 - s) & (ys < l0_y1)
        return self._order[lo:hi][keep]


@dataclass(frozen=True)
class ClassScores:
    """One class's attention for a slide and what the API reports about each patch."""

    raw: np.ndarray  # (N,) float32 as stored
    percentile: np.ndarray  # (N,) in [0, 100]: CLAM's percentileofscore(kind='rank')
    rank: np.ndarray  # (N,) int: 1 = most attended
    order: np.ndarray  # (N,) patch indices, most attended first


class SlideScores:
    """The blockmap of one slide plus its lazily computed, cached derivations."""

    def __init__(self, blockmap: Blockmap):
        self.blockmap = blockmap
        self.l0_coords = np.ascontiguousarray(blockmap.l0_coords, dtype=np.int64)
        self.l0_patch = int(blockmap.l0_patch)
        self.index = PatchIndex(self.l0_coords, self.l0_patch)
        self._normalized: dict[tuple[int, str], np.ndarray] = {}
        self._classes: dict[int, ClassScores] = {}
        self._lock = threading.Lock()

    @property
    def bag_size(self) -> int:
        return self.blockmap.bag_size

    def class_available(self, class_index: int) -> bool:
        bm = self.blockmap
        return class_index == bm.pred or (bm.attention_per_class is not None
                                          and 0 <= class_index < bm.attention_per_class.shape[1])

    def resolve_class(self, class_index: int | None) -> int:
        """The class whose attention to show (None: the predicted one); BadRequest if absent."""
        bm = self.blockmap
        if class_index is None:
            return bm.pred
        if not 0 <= class_index < bm.n_classes:
            raise BadRequest(f"class {class_index} out of range 0..{bm.n_classes - 1}")
        if not self.class_available(class_index):
            raise BadRequest(f"{bm.model_type} stores attention for the predicted class "
                             f"({bm.pred}, {bm.class_names[bm.pred]}) only; class {class_index} has none")
        return class_index

    def raw(self, class_index: int) -> np.ndarray:
        try:
            return self.blockmap.scores_for_class(class_index)
        except BlockmapError as exc:
            raise BadRequest(str(exc)) from None

    def normalized(self, class_index: int, norm: str) -> np.ndarray:
        """Scores in [0, 1] (NaN kept) by the same `normalize_scores` as the static heatmaps."""
        key = (class_index, norm)
        values = self._normalized.get(key)
        if values is None:
            values = normalize_scores(self.raw(class_index), norm).astype(np.float32)
            values.setflags(write=False)
            with self._lock:
                values = self._normalized.setdefault(key, values)
        return values

    def class_scores(self, class_index: int) -> ClassScores:
        found = self._classes.get(class_index)
        if found is not None:
            return found
        raw = self.raw(class_index)
        percentile = self.normalized(class_index, "percentile") * 100.0
        keyed = np.where(np.isfinite(raw), raw, -np.inf)
        order = np.argsort(-keyed, kind="stable")  # ties keep bag order
        rank = np.empty(len(raw), np.int64)
        rank[order] = np.arange(1, len(raw) + 1)
        found = ClassScores(raw=raw, percentile=percentile, rank=rank, order=order)
        with self._lock:
            return self._classes.setdefault(class_index, found)

    def patch_at(self, l0_x: float, l0_y: float) -> np.ndarray:
        """Indices of patches covering a level-0 point, nearest centre first."""
        hits = self.index.overlapping(l0_x, l0_y, np.nextafter(l0_x, np.inf), np.nextafter(l0_y, np.inf))
        if hits.size == 0:
            return hits
        xy = self.l0_coords[hits]
        half = self.l0_patch / 2.0
        inside = ((xy[:, 0] <= l0_x) & (l0_x < xy[:, 0] + self.l0_patch)
                  & (xy[:, 1] <= l0_y) & (l0_y < xy[:, 1] + self.l0_patch))
        hits, xy = hits[inside], xy[inside]
        dist = (xy[:, 0] + half - l0_x) ** 2 + (xy[:, 1] + half - l0_y) ** 2
        return hits[np.argsort(dist, kind="stable")]

    def patch(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.bag_size:
            raise NotFound(f"patch {index} out of range 0..{self.bag_size - 1}")
        x, y = self.l0_coords[index]
        return int(x), int(y)


class ScoreStore:
    """`SlideScores` by blockmap path, least recently used dropped first (thread-safe)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[Path, SlideScores] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, blockmap_path: Path) -> SlideScores:
        with self._lock:
            found = self._items.get(blockmap_path)
            if found is not None:
                self._items.move_to_end(blockmap_path)
                return found
        loaded = SlideScores(read_blockmap(blockmap_path))  # outside the lock: h5 reads take time
        with self._lock:
            found = self._items.setdefault(blockmap_path, loaded)
            self._items.move_to_end(blockmap_path)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return found
