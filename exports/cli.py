"""`export_heatmaps.py` / `mil-export`: a scored cohort's heatmaps in the formats other tools read.

    python export_heatmaps.py --config FILE --to qupath,tiff,dsa,csv [--slides ID,...] [--norm percentile|raw]
                              [--class NAME|INDEX] [--cmap NAME] [--threshold T] [--downsample D]

Reads the blockmaps the config's scoring run wrote (no torch, no model) and writes under
`{production_save_dir}/{save_exp_code}/exports/{format}/`. Exit codes: 0 every slide exported,
1 some slides could not be (each named in the log; the others are written), 2 a bad option or
config (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from exports.dsa import write_annotation
from exports.options import CLASS_OPTION, ExportError, ExportOptions, ExportScores
from exports.qupath import write_regions, write_tiles
from exports.table import write_table
from exports.tiff import default_downsample, write_heatmap_tiff, write_likelihood_map
from scoremap.blockmap import find_blockmaps, read_blockmap, read_blockmap_header
from scoremap.colormap import check_colormap
from scoremap.defaults import OVERLAY
from scoremap.errors import BlockmapError, ParameterError, ScoreMapError, UnknownColormap
from scoremap.normalize import NORMS
from scoremap.params import check_norm, check_threshold, resolve_class

log = logging.getLogger("exports")
FORMATS = ("qupath", "tiff", "dsa", "csv")


@dataclass(frozen=True)
class Job:
    slide_id: str
    blockmap: Path


@dataclass(frozen=True)
class SlideFacts:
    dimensions: tuple[int, int]
    mpp: tuple[float, float] | None


def slide_facts(slide_path: str, roots: list[Path]) -> SlideFacts | None:
    """The slide's level-0 size and microns per pixel, from the recorded path or the config's
    slide folders; None when no readable slide is found."""
    from scoremap.slides import open_slide, slide_mpp

    candidates = [Path(slide_path)] + [root / Path(slide_path).name for root in roots]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            with open_slide(candidate) as slide:
                width, height = (int(v) for v in slide.dimensions)
                mpp = slide_mpp(slide.properties)
        except ScoreMapError:
            return None
        return SlideFacts((width, height), mpp)
    return None


def export_slide(
    job: Job,
    formats: list[str],
    options: ExportOptions,
    out_root: Path,
    roots: list[Path],
    downsample: int | None = None,
) -> list[Path]:
    bm = read_blockmap(job.blockmap)
    scores = ExportScores.of(bm, options)
    sid = job.slide_id
    facts = (
        slide_facts(bm.slide_path, roots)
        if {"tiff"} & set(formats) or options.threshold is not None
        else None
    )
    mpp = facts.mpp if facts is not None else None

    def tiffs() -> list[Path]:
        if facts is None:
            raise ExportError(
                f"tiff: the slide of {sid} ({Path(bm.slide_path).name}) is not readable under the "
                "config's slide folders; its size is needed to register the heatmap"
            )
        d = downsample or default_downsample(bm.l0_patch)
        return [
            write_heatmap_tiff(
                scores,
                facts.dimensions,
                mpp,
                options.cmap,
                options.threshold,
                d,
                out_root / "tiff" / f"{sid}_heatmap.tif",
            ),
            write_likelihood_map(
                scores, facts.dimensions, mpp, d, out_root / "tiff" / f"{sid}_likelihood_map.tif"
            ),
        ]

    writers: dict[str, Callable[[], list[Path]]] = {
        "csv": lambda: [write_table(scores, out_root / "csv" / f"{sid}_patches.csv")],
        "qupath": lambda: (
            [write_tiles(scores, out_root / "qupath" / f"{sid}.geojson")]
            + (
                []
                if options.threshold is None
                else [
                    write_regions(
                        scores,
                        options.threshold,
                        options.cmap,
                        mpp,
                        out_root / "qupath" / f"{sid}_regions.geojson",
                    )
                ]
            )
        ),
        "tiff": tiffs,
        "dsa": lambda: [
            write_annotation(scores, options, out_root / "dsa" / f"{sid}_annotation.json")
        ],
    }
    written = []
    for fmt in formats:
        written += writers[fmt]()
    return written


def check_class(class_ref: str, blockmaps: Iterable[Path]) -> None:
    """`--class` against every slide's classes before anything is written: the slides of one
    scoring run share them, so a class one lacks is a wrong option (ParameterError). A blockmap
    that cannot be read is left to its own export, which names it."""
    for path in blockmaps:
        try:
            head = read_blockmap_header(path)
        except BlockmapError:
            continue
        resolve_class(head, class_ref, CLASS_OPTION)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export a scored cohort's heatmaps for QuPath, ASAP, "
        "HistomicsUI/DSA and tables."
    )
    parser.add_argument(
        "--config",
        "--config_file",
        dest="config",
        required=True,
        metavar="FILE",
        help="the scoring config the cohort was scored with",
    )
    parser.add_argument(
        "--to", required=True, metavar="FORMAT[,FORMAT]", help=f"any of {', '.join(FORMATS)}"
    )
    parser.add_argument(
        "--slides", metavar="ID,...", help="only these slides (default: every scored slide)"
    )
    parser.add_argument(
        "--norm", default=OVERLAY["norm"], help=f"{'|'.join(NORMS)} (default {OVERLAY['norm']})"
    )
    parser.add_argument(
        "--class", dest="class_ref", metavar="NAME|INDEX", help="default: the predicted class"
    )
    parser.add_argument(
        "--cmap",
        default=OVERLAY["cmap"],
        help=f"any matplotlib colormap (default {OVERLAY['cmap']})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="normalised score 0..1: regions above it; lower scores transparent in the tiff",
    )
    parser.add_argument(
        "--downsample",
        type=int,
        metavar="D",
        help="tiff: level-0 pixels per pixel, a power of two (default: the largest <= 32 "
        "at which a patch is still >= 8 px)",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    from scoring.config import load_config
    from scoring.errors import ConfigError

    try:
        formats = [f.strip() for f in args.to.split(",") if f.strip()]
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ExportError(
                f"--to {args.to!r}: unknown format {', '.join(unknown) or '(none)'}; "
                f"expected any of {', '.join(FORMATS)}"
            )
        try:
            check_colormap(args.cmap)
        except UnknownColormap as exc:
            raise ExportError(f"--cmap: {exc}") from None
        options = ExportOptions(
            norm=check_norm(args.norm, "--norm"),
            class_ref=args.class_ref,
            cmap=args.cmap,
            threshold=None
            if args.threshold is None
            else check_threshold(args.threshold, "--threshold"),
        )
        if args.downsample is not None and (
            args.downsample < 1 or args.downsample & (args.downsample - 1)
        ):
            raise ExportError(
                f"--downsample {args.downsample}: expected a power of two (1, 2, 4, ...)"
            )
        config = load_config(args.config)
        found = {sid: path for _, sid, path in find_blockmaps(config.exp_raw_dir)}
        if args.slides:
            wanted = [s.strip() for s in args.slides.split(",") if s.strip()]
            missing = [s for s in wanted if s not in found]
            if missing:
                raise ExportError(
                    f"--slides: no blockmap for {', '.join(missing)} under {config.exp_raw_dir}"
                )
            found = {s: found[s] for s in wanted}
        if not found:
            raise ExportError(
                f"{args.config}: no scored slides under {config.exp_raw_dir} "
                f"(run create_heatmaps.py --config {args.config} first)"
            )
        if args.class_ref is not None:
            check_class(args.class_ref, found.values())
    except (ExportError, ConfigError, ParameterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_root = config.exp_production_dir / "exports"
    roots = (
        list(config.data_dir.values()) if isinstance(config.data_dir, dict) else [config.data_dir]
    )
    failed = 0
    for sid, path in tqdm(found.items(), desc="export", unit="slide", disable=args.no_progress):
        try:
            for written in export_slide(
                Job(sid, path), formats, options, out_root, roots, args.downsample
            ):
                log.info("%s: wrote %s", sid, written)
        except (ExportError, ScoreMapError, OSError) as exc:
            failed += 1
            log.error("%s: not exported: %s", sid, exc)
    print(f"exported {len(found) - failed} of {len(found)} slides to {out_root}", file=sys.stderr)
    return 1 if failed else 0
