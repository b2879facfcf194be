"""`create_heatmaps.py`: the command line, and the one place errors become messages and exit codes.

Exit codes: 0 every slide done; 1 some slides failed (listed in the errors CSV); 2 the config,
process list, checkpoint or an output folder is wrong, and no slide was processed; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

from scoring.errors import HeatmapError

#: What the models need beyond the viewer's install: the `scoring` extra of pyproject.toml.
SCORING_MODULES = ("torch", "safetensors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score a cohort of slides with a trained MIL model and write attention blockmaps, "
        "results.csv, sampled patches and static heatmaps."
    )
    parser.add_argument(
        "--config",
        "--config_file",
        dest="config",
        required=True,
        metavar="FILE",
        help="YAML config (the guide's schema, or CLAM's heatmap config)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="redo slides that already have a blockmap"
    )
    parser.add_argument(
        "--shard", metavar="I/N", help="process only the I-th of N disjoint parts (1 <= I <= N)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (e.g. in batch logs)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    missing = [name for name in SCORING_MODULES if importlib.util.find_spec(name) is None]
    if missing:  # a viewer-only install (`pip install .`): say what to add, not a traceback
        print(
            f"error: scoring needs {', '.join(missing)}, which this environment lacks: "
            "pip install 'mil-heatmap-viewer[scoring]' (or `make install`)",
            file=sys.stderr,
        )
        return 2
    from scoring.config import load_config
    from scoring.inventory import parse_shard
    from scoring.pipeline import run

    try:
        shard = parse_shard(args.shard) if args.shard else None
        config = load_config(args.config)
        summary = run(config, overwrite=args.overwrite, shard=shard, progress=not args.no_progress)
    except HeatmapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished slides are kept; rerun the same command to go on",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:  # e.g. the disk filled while writing results.csv
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"scored {len(summary.scored)}, skipped {len(summary.skipped)} already done, "
        f"failed {len(summary.failed)}; results: {summary.results_csv}",
        file=sys.stderr,
    )
    if summary.failed:
        print(f"failed slides are listed in {summary.errors_csv}", file=sys.stderr)
        return 1
    return 0
