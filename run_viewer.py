#!/usr/bin/env python
"""Serve the viewer (= `mil-viewer`).

python run_viewer.py --config FILE | --results DIR --slides DIR | --demo
"""

import sys

from viewer.cli import main

if __name__ == "__main__":
    sys.exit(main())
