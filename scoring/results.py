"""results.csv: one row per finished slide, kept equal to the blockmaps on disk at every moment.

A slide is finished when its blockmap exists, so results.csv must list exactly those slides, even
when a run is killed: a slide redone with `--overwrite` leaves the table *before* its blockmap is
removed, and enters it as soon as its new blockmap is written. Several processes may edit the table
at once (`--shard I/N`, one per SLURM array task): every edit is a read-modify-write of the file
under an exclusive `flock` on a lock file beside it, and the file itself is replaced atomically
(readers never see half a table). At the end of a run the table is rebuilt from the blockmaps of
the whole cohort, which also heals whatever an earlier, killed run left.

`Pred_X` is 1 for the predicted class X and 0 otherwise; `p_X` is the probability of class X.
Rows follow the process-list order.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scoremap.atomic import atomic_output
from scoremap.blockmap import BlockmapError, BlockmapHeader, blockmap_path, read_blockmap_header

log = logging.getLogger(__name__)


def header_for(n_classes: int) -> list[str]:
    return (
        ["slide_id", "label", "bag_size"]
        + [f"Pred_{c}" for c in range(n_classes)]
        + [f"p_{c}" for c in range(n_classes)]
    )


def row_for(bm: BlockmapHeader) -> list[str]:
    return [
        bm.slide_id,
        bm.label,
        str(bm.bag_size),
        *[str(int(c == bm.pred)) for c in range(bm.n_classes)],
        *[f"{p:.6f}" for p in bm.probs],
    ]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_output(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


class ResultsTable:
    """The cohort's results.csv, edited under a lock so that shards never lose each other's rows."""

    def __init__(self, path: Path, raw_exp_dir: Path, cohort: list, default_classes: int):
        self.path = Path(path)
        self.raw_exp_dir = Path(raw_exp_dir)
        self.cohort = list(cohort)  # SlideJobs in process-list order
        self.order = {job.slide_id: i for i, job in enumerate(self.cohort)}
        self.default_classes = default_classes
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> tuple[list[str] | None, dict[str, list[str]]]:
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except FileNotFoundError:
            return None, {}
        except (OSError, UnicodeDecodeError, csv.Error):
            return None, {}  # unreadable: rewritten from what is known
        if not rows:
            return None, {}
        return rows[0], {row[0]: row for row in rows[1:] if row}

    def _write(self, header: list[str], rows: dict[str, list[str]]) -> None:
        ranked = sorted(rows.values(), key=lambda r: (self.order.get(r[0], len(self.order)), r[0]))
        write_csv(self.path, header, ranked)

    def drop(self, slide_id: str) -> None:
        """Before a finished slide's blockmap is removed (--overwrite): it leaves the table first."""
        with self._locked():
            header, rows = self._read()
            if header is not None and rows.pop(slide_id, None) is not None:
                self._write(header, rows)

    def put(self, bm: BlockmapHeader) -> None:
        """After a slide's blockmap is written: its row enters (or replaces) the table."""
        with self._locked():
            header, rows = self._read()
            wanted = header_for(bm.n_classes)
            if header is not None and header != wanted:  # another class count: rebuild from disk
                self._rebuild()
                return
            rows[bm.slide_id] = row_for(bm)
            self._write(wanted, rows)

    def rebuild(self) -> Path:
        """The table from every blockmap of the cohort (all shards), in process-list order."""
        with self._locked():
            self._rebuild()
        return self.path

    def _rebuild(self) -> None:
        rows: dict[str, list[str]] = {}
        n_classes = 0
        for job in self.cohort:
            path = blockmap_path(self.raw_exp_dir, job.label, job.slide_id)
            if not path.exists():
                continue
            try:
                bm = read_blockmap_header(path)
            except BlockmapError as exc:
                log.warning("results.csv leaves out %s: %s", job.slide_id, exc)
                continue
            n_classes = max(n_classes, bm.n_classes)
            rows[job.slide_id] = row_for(bm)
        self._write(header_for(n_classes or self.default_classes), rows)
