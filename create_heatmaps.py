#!/usr/bin/env python
"""Score a cohort and write heatmaps: `python create_heatmaps.py --config FILE [--overwrite] [--shard I/N]` (= `mil-heatmaps`)."""
import sys

from scoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
