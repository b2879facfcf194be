#!/usr/bin/env python
"""Score a cohort and write heatmaps (= `mil-heatmaps`).

python create_heatmaps.py --config FILE [--overwrite] [--shard I/N]
"""

import sys

from scoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
