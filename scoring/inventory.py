"""Which slides to score: the process list (or every `*{slide_ext}` in data_dir), resolved to jobs.

The process list is checked as a whole before any work, like the config: a wrong column or an
unknown data_dir key is a config mistake, not a per-slide failure.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from scoring.config import Config
from scoring.errors import ConfigError

UNSPECIFIED_LABEL = "Unspecified"
ROI_COLUMNS = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class SlideJob:
    """One slide to score, with whatever the process list said about it."""

    index: int  # position in the cohort, which decides its shard
    slide_id: str
    slide_path: Path
    label: str
    features_path: Path | None = None  # explicit per-slide paths from the process list
    coords_path: Path | None = None
    roi: tuple[int, int, int, int] | None = None  # level-0 x1, y1, x2, y2


def _is_blank(value: str | None) -> bool:
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none", "null")


def _parse_process(value: str | None, where: str) -> bool:
    if _is_blank(value):
        return True
    v = value.strip().lower()
    if v in ("1", "1.0", "true", "yes"):
        return True
    if v in ("0", "0.0", "false", "no"):
        return False
    raise ConfigError(f"{where}: process must be 1 or 0, got {value!r}")


def _label_name(raw: str | None, config: Config) -> str:
    if _is_blank(raw):
        return UNSPECIFIED_LABEL
    label = raw.strip()
    if config.label_dict and label not in config.label_dict:
        # a numeric label with a label_dict: show its name, as CLAM does
        reverse = {str(i): name for name, i in config.label_dict.items()}
        try:
            return reverse.get(str(int(float(label))), label)
        except ValueError:
            return label
    return label


def _resolve_listed(value: str | None, base: Path) -> Path | None:
    """A path from the process list: as written (from the working dir), else next to the list."""
    if _is_blank(value):
        return None
    path = Path(value.strip()).expanduser()
    if path.is_absolute() or path.exists():
        return path
    beside = base / path
    return beside if beside.exists() else path


def _split_slide_id(raw: str, slide_ext: str) -> tuple[str, str | None]:
    """`slide_001.svs` -> (`slide_001`, `.svs`); an id without an extension keeps slide_ext."""
    name = raw.strip()
    if name.lower().endswith(slide_ext.lower()):
        return name[: -len(slide_ext)], name[
            -len(slide_ext) :
        ]  # the row's spelling: S1.SVS stays .SVS
    return name, None


def _find_slide(folder: Path, name: str, ext: str | None, slide_ext: str) -> tuple[str, Path]:
    """(slide id, slide path); an id given with another extension (`x.ndpi` in a .svs cohort) is the file."""
    if ext is not None:
        return name, folder / (name + ext)
    candidate = folder / (name + slide_ext)
    if candidate.exists():
        return name, candidate
    as_is = folder / name
    if as_is.is_file() and as_is.suffix:
        return as_is.stem, as_is
    return name, candidate


def _roi(row: dict[str, str], where: str) -> tuple[int, int, int, int] | None:
    values = [row.get(c) for c in ROI_COLUMNS]
    if all(_is_blank(v) for v in values):
        return None
    if any(_is_blank(v) for v in values):
        raise ConfigError(
            f"{where}: ROI needs all of x1, y1, x2, y2 (level-0 pixels), got "
            + ", ".join(f"{c}={v!r}" for c, v in zip(ROI_COLUMNS, values, strict=True))
        )
    try:
        nums = [float(v) for v in values]  # type: ignore[arg-type]
        if not all(math.isfinite(n) for n in nums):
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"{where}: ROI x1, y1, x2, y2 must be level-0 pixel numbers, got "
            + ", ".join(str(v) for v in values)
        ) from None
    x1, y1, x2, y2 = (round(n) for n in nums)
    if x2 <= x1 or y2 <= y1:
        raise ConfigError(
            f"{where}: ROI must have x2 > x1 and y2 > y1, got ({x1}, {y1}, {x2}, {y2})"
        )
    return x1, y1, x2, y2


def _from_process_list(config: Config) -> list[SlideJob]:
    source = config.process_list
    assert source is not None
    if not source.is_file():
        raise ConfigError(f"{config.source}: data_arguments.process_list: file not found: {source}")
    try:
        with open(source, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: data_arguments.process_list is not a UTF-8 text CSV (byte {exc.start} "
            "cannot be decoded); expected columns slide_id, label, process, ..."
        ) from None
    except (csv.Error, OSError) as exc:
        raise ConfigError(
            f"{source}: data_arguments.process_list cannot be read as CSV: {exc}"
        ) from None
    if "slide_id" not in columns:
        raise ConfigError(
            f"{source}: process list has no 'slide_id' column; columns found: "
            f"{', '.join(columns) or 'none'}"
        )
    key_column = config.data_dir_key
    if isinstance(config.data_dir, dict) and key_column not in columns:
        raise ConfigError(
            f"{source}: process list has no '{key_column}' column, which data_arguments.data_dir_key "
            f"names to choose among data_dir keys {', '.join(config.data_dir)}"
        )
    jobs: list[SlideJob] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{source}, line {line}"
        raw_id = row.get("slide_id")
        if _is_blank(raw_id):
            raise ConfigError(f"{where}: empty slide_id")
        if not _parse_process(row.get("process"), where):
            continue
        if isinstance(config.data_dir, dict):
            key = (row.get(key_column) or "").strip()  # type: ignore[arg-type]
            if key not in config.data_dir:
                raise ConfigError(
                    f"{where}: {key_column}={key!r} is not a key of data_arguments.data_dir "
                    f"(expected one of {', '.join(config.data_dir)})"
                )
            folder = config.data_dir[key]
        else:
            folder = config.data_dir
        name, ext = _split_slide_id(raw_id, config.slide_ext)  # type: ignore[arg-type]
        slide_id, slide_path = _find_slide(folder, name, ext, config.slide_ext)
        if slide_id in seen:
            raise ConfigError(
                f"{where}: slide_id {slide_id!r} is listed twice (first on line {seen[slide_id]})"
            )
        seen[slide_id] = line
        jobs.append(
            SlideJob(
                index=len(jobs),
                slide_id=slide_id,
                slide_path=slide_path,
                label=_label_name(row.get("label"), config),
                features_path=_resolve_listed(row.get("features_path"), source.parent),
                coords_path=_resolve_listed(row.get("coords_path"), source.parent),
                roi=_roi(row, where),
            )
        )
    return jobs


def _from_data_dir(config: Config) -> list[SlideJob]:
    folder = config.data_dir
    assert isinstance(folder, Path)
    if not folder.is_dir():
        raise ConfigError(f"{config.source}: data_arguments.data_dir: folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.name.lower().endswith(config.slide_ext.lower()))
    return [
        SlideJob(
            index=i,
            slide_id=p.name[: -len(config.slide_ext)],
            slide_path=p,
            label=UNSPECIFIED_LABEL,
        )
        for i, p in enumerate(paths)
    ]


def list_slides(config: Config) -> list[SlideJob]:
    """Every slide the config asks for, in process-list order; raises ConfigError on a bad list."""
    return _from_process_list(config) if config.process_list is not None else _from_data_dir(config)


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard I/N` with 1 <= I <= N, for SLURM job arrays and the like."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ConfigError(
            f"--shard must be I/N with whole numbers, e.g. 1/4; got {text!r}"
        ) from None
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def shard_jobs(jobs: list[SlideJob], shard: tuple[int, int] | None) -> list[SlideJob]:
    """The I-th of N disjoint parts, dealt round-robin so that parts get similar mixes of slides."""
    if shard is None:
        return jobs
    i, n = shard
    return [job for job in jobs if job.index % n == i - 1]
