#!/usr/bin/env python
"""Export heatmaps: `python export_heatmaps.py --config FILE --to qupath,csv ...` (= `mil-export`)."""

import sys

from exports.cli import main

if __name__ == "__main__":
    sys.exit(main())
