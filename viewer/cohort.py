"""The cohort the viewer serves: one record per blockmap, with its slide located and probed.

Sources:
- a scoring config (`--config`): blockmaps under `{raw_save_dir}/{save_exp_code}`, the table order
  from `{production_save_dir}/{save_exp_code}/results.csv` when it exists, slides under the
  config's `data_dir` folder(s);
- a raw results experiment folder (`--results DIR --slides DIR`): blockmaps at
  `DIR/{label}/{slide_id}/{slide_id}_blockmap.h5`, slides under `--slides`;
- the demo (`--demo`): the scoring config `data/demo/demo_config.yaml`.

Every blockmap's header is read once here, for the cohort table (prediction, probabilities, bag size),
and every slide opened once, for its metadata and to find the files OpenSlide refuses. A slide
that cannot be served keeps its row, marked unreadable with the reason and the HTTP status its
requests get; nothing about one bad slide stops the others. Relative paths in a scoring config
are taken from the working directory, as the scoring CLI takes them (the demo's from the
repository root).
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scoremap.blockmap import (
    ATTENTION_DEFINITIONS,
    BlockmapError,
    find_blockmaps,
    read_blockmap_header,
)
from scoremap.cache import file_identity
from scoremap.checkout import DEMO_DIR, REPO_ROOT
from scoremap.slide_paths import locate_slide, real_roots
from scoring.errors import ConfigError
from viewer.errors import NotFound, SlideForbidden, SlideUnreadable, ViewerConfigError, ViewerError
from viewer.slides import SlideInfo, probe_slide

log = logging.getLogger(__name__)

DEMO_CONFIG = DEMO_DIR / "demo_config.yaml"


@dataclass(frozen=True)
class Prediction:
    """What the model said about one slide, copied out of its blockmap."""

    class_names: tuple[str, ...]
    pred: int
    probs: tuple[float, ...]
    bag_size: int
    model_type: str
    l0_patch: int
    has_per_class: bool
    attention_definition: str = ""


@dataclass
class SlideRecord:
    """One row of the cohort: its blockmap, its slide (or why it cannot be shown)."""

    slide_id: str
    label: str
    blockmap_path: Path
    recorded_slide_path: str
    prediction: Prediction
    slide_path: Path | None = None
    info: SlideInfo | None = None
    problem: str | None = None
    problem_status: int = 200
    roots: tuple[Path, ...] = ()
    blockmap_stamp: tuple | None = (
        None  # file identities when last read (scoremap.cache.file_identity)
    )
    slide_stamp: tuple | None = None
    watched: Path | None = None  # the slide file whose identity is watched
    experiment: str = ""  # the experiment (save_exp_code) that scored it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def refresh(self) -> None:
        """Follow the files while serving: a rescored blockmap updates the prediction; a slide
        that was deleted, restored, replaced or swapped for a symlink is located and probed again
        (a symlink out of the roots is refused then, as at start-up). Two stat calls when nothing
        changed."""
        stamp = file_identity(self.blockmap_path)
        if stamp != self.blockmap_stamp:
            with self._lock:
                if stamp != self.blockmap_stamp:
                    try:
                        head = read_blockmap_header(self.blockmap_path)
                        self.prediction, self.recorded_slide_path = (
                            _prediction(head),
                            head.slide_path,
                        )
                    except BlockmapError as exc:  # the score routes report it (404)
                        log.warning("%s: %s", self.slide_id, exc)
                    self.blockmap_stamp = stamp
        if self.watched is not None and file_identity(self.watched) != self.slide_stamp:
            with self._lock:
                if file_identity(self.watched) != self.slide_stamp:
                    _attach_slide(self, self.roots)

    @property
    def readable(self) -> bool:
        return self.problem is None and self.slide_path is not None and self.info is not None

    def require_slide(self) -> tuple[Path, SlideInfo]:
        """The slide's path and metadata, or the 4xx that says why it is not served."""
        if self.readable:
            return self.slide_path, self.info  # type: ignore[return-value]
        error = {403: SlideForbidden, 404: NotFound}.get(self.problem_status, SlideUnreadable)
        raise error(f"slide {self.slide_id!r} is not available: {self.problem}")

    def mark_unreadable(self, message: str) -> None:
        """Remember a read failure found while serving, so the cohort table shows it too."""
        with self._lock:
            if self.problem is None:
                self.problem, self.problem_status = message, 422


@dataclass
class Cohort:
    """Records in table order, the slide roots, and where they came from (for the page title)."""

    records: dict[str, SlideRecord]
    roots: tuple[Path, ...]
    source: str
    results_csv: Path | None = None
    annotations_dir: Path | None = None  # {slide_id}.geojson (QuPath) or .xml (ASAP) per slide
    experiment: str = ""  # its name: the config's save_exp_code, the results folder's name

    def __post_init__(self) -> None:
        if not self.experiment:
            self.experiment = Path(self.source).stem or "experiment"
        for record in self.records.values():
            record.experiment = self.experiment

    @property
    def name(self) -> str:
        """What clients are told the cohort is: the config's or results folder's name, no path."""
        return Path(self.source).name or self.source

    def __contains__(self, slide_id: str) -> bool:
        return slide_id in self.records

    def get(self, slide_id: str) -> SlideRecord:
        record = self.records.get(slide_id)
        if record is None:
            raise NotFound(f"unknown slide {slide_id[:200]!r}")
        record.refresh()
        return record

    def __iter__(self):
        for record in list(self.records.values()):
            record.refresh()
            yield record

    def __len__(self) -> int:
        return len(self.records)


def results_order(results_csv: Path | None) -> list[str]:
    """Slide ids in the order of results.csv (the pipeline writes it in process-list order)."""
    if results_csv is None or not results_csv.is_file():
        return []
    try:
        with open(results_csv, newline="", encoding="utf-8") as fh:
            return [row["slide_id"] for row in csv.DictReader(fh) if row.get("slide_id")]
    except (OSError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        log.warning(
            "%s: cannot read the cohort order (%s); sorting by label and slide id", results_csv, exc
        )
        return []


def _prediction(bm) -> Prediction:
    return Prediction(
        class_names=tuple(bm.class_names),
        pred=int(bm.pred),
        probs=tuple(float(p) for p in np.asarray(bm.probs, np.float64)),
        bag_size=bm.bag_size,
        model_type=bm.model_type,
        l0_patch=int(bm.l0_patch),
        has_per_class=bm.has_per_class,
        attention_definition=ATTENTION_DEFINITIONS.get(bm.model_type, ""),
    )


def _read_record(
    label: str, slide_id: str, path: Path, roots: tuple[Path, ...]
) -> SlideRecord | None:
    stamp = file_identity(path)
    try:
        bm = read_blockmap_header(path)  # attributes and shapes only: the arrays load on first view
    except BlockmapError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None
    if bm.slide_id != slide_id:
        log.warning(
            "%s: blockmap says slide_id %r; using the folder name %r", path, bm.slide_id, slide_id
        )
    return SlideRecord(
        slide_id=slide_id,
        label=label,
        blockmap_path=path,
        recorded_slide_path=bm.slide_path,
        prediction=_prediction(bm),
        roots=roots,
        blockmap_stamp=stamp,
    )


def _attach_slide(record: SlideRecord, roots: Sequence[Path]) -> None:
    """Locate and probe the record's slide; remember the identity of the file looked at. The
    record's fields change together at the end, so a concurrent request sees the old or the new."""
    where = locate_slide(record.recorded_slide_path, record.slide_id, roots)
    watched = where.path or _expected_path(record, roots)
    stamp = file_identity(watched) if watched is not None else None
    path, info, problem, status = where.path, None, where.problem, where.status
    if path is None:
        log.warning("%s: not served: %s", record.slide_id, where.detail or where.problem)
    else:
        try:
            info = probe_slide(path)
        except ViewerError as exc:
            problem, status = exc.message, exc.status
            log.warning("%s: not served: %s (%s)", record.slide_id, exc.message, path)
    if problem is None:
        status = 200
    record.slide_path, record.info, record.problem, record.problem_status = (
        path,
        info,
        problem,
        status,
    )
    record.watched, record.slide_stamp = watched, stamp


def _expected_path(record: SlideRecord, roots: Sequence[Path]) -> Path | None:
    """Where a slide not found now would reappear: its recorded path, or its name in the first root."""
    recorded = Path(record.recorded_slide_path).expanduser() if record.recorded_slide_path else None
    if recorded is not None and recorded.is_absolute():
        return recorded
    if recorded is not None and recorded.name and roots:
        return roots[0] / recorded.name
    return None


def cohort_from_blockmaps(
    blockmaps: Iterable[tuple[str, str, Path]],
    slide_roots: Sequence[os.PathLike | str],
    source: str,
    results_csv: Path | None = None,
    workers: int = 4,
    experiment: str = "",
) -> Cohort:
    """Read the blockmaps, locate and probe their slides (in parallel: opening is I/O bound)."""
    roots = real_roots(slide_roots)
    records: dict[str, SlideRecord] = {}
    for label, slide_id, path in blockmaps:
        record = _read_record(label, slide_id, path, roots)
        if record is None:
            continue
        if slide_id in records:
            log.warning(
                "slide %s appears twice (%s and %s); keeping the first",
                slide_id,
                records[slide_id].blockmap_path,
                path,
            )
            continue
        records[slide_id] = record
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(lambda r: _attach_slide(r, roots), records.values()))
    order = {sid: i for i, sid in enumerate(results_order(results_csv))}
    ranked = sorted(
        records.values(), key=lambda r: (order.get(r.slide_id, len(order)), r.label, r.slide_id)
    )
    return Cohort(
        {r.slide_id: r for r in ranked}, roots, source, results_csv, experiment=experiment
    )


def _absolute(path: Path, base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def cohort_from_config(config_file: os.PathLike | str, base: Path | None = None) -> Cohort:
    """The cohort of a scoring config: its blockmaps, results.csv order and data_dir roots."""
    from scoring.config import load_config  # torch-free (checked by the tests)

    try:
        config = load_config(config_file)
    except ConfigError as exc:
        raise ViewerConfigError(str(exc)) from None
    base = Path.cwd() if base is None else base
    raw_dir = _absolute(config.exp_raw_dir, base)
    if not raw_dir.is_dir():
        raise ViewerConfigError(
            f"{config_file}: no scored slides yet: {raw_dir} does not exist "
            f"(run create_heatmaps.py --config {config_file} first)"
        )
    data_dirs = config.data_dir.values() if isinstance(config.data_dir, dict) else [config.data_dir]
    roots = [_absolute(d, base) for d in data_dirs]
    results_csv = _absolute(config.exp_production_dir, base) / "results.csv"
    cohort = cohort_from_blockmaps(
        find_blockmaps(raw_dir),
        roots,
        f"{config_file}",
        results_csv,
        experiment=config.save_exp_code,
    )
    if config.annotations_dir is not None:
        cohort.annotations_dir = _absolute(config.annotations_dir, base)
    return cohort


def cohort_from_results(results_dir: os.PathLike | str, slides_dir: os.PathLike | str) -> Cohort:
    """The cohort of a raw results experiment folder, slides looked up under `slides_dir`."""
    results_dir, slides_dir = Path(results_dir).expanduser(), Path(slides_dir).expanduser()
    if not results_dir.is_dir():
        raise ViewerConfigError(
            f"--results {results_dir}: not a folder (expected a raw results experiment "
            "folder holding {label}/{slide_id}/{slide_id}_blockmap.h5)"
        )
    if not slides_dir.is_dir():
        raise ViewerConfigError(f"--slides {slides_dir}: not a folder")
    blockmaps = find_blockmaps(results_dir)
    if not blockmaps:
        log.warning("%s holds no {label}/{slide_id}/{slide_id}_blockmap.h5 files", results_dir)
    csv_path = results_dir / "results.csv"
    return cohort_from_blockmaps(
        blockmaps,
        [slides_dir],
        f"{results_dir}",
        csv_path if csv_path.is_file() else None,
        experiment=results_dir.resolve().name,
    )


def demo_cohorts() -> list[Cohort]:
    """The demo's experiments: its config, and the second model's where that was scored too."""
    if not DEMO_CONFIG.is_file():
        raise ViewerConfigError(
            f"{DEMO_CONFIG} not found: build the demo first with `make demo` "
            "(or `python -m demo.build` and `python create_heatmaps.py --config "
            f"{DEMO_CONFIG.relative_to(REPO_ROOT)}`)"
        )
    cohorts = [cohort_from_config(DEMO_CONFIG, base=REPO_ROOT)]
    for extra in sorted(DEMO_CONFIG.parent.glob("demo_config_*.yaml")):
        try:
            cohorts.append(cohort_from_config(extra, base=REPO_ROOT))
        except ViewerConfigError as exc:  # built but not scored yet: the demo shows the first
            log.warning("demo experiment %s not served: %s", extra.name, exc)
    return cohorts
