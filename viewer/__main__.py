"""`python -m viewer ...`: the same as `mil-viewer` and `python run_viewer.py`."""

import sys

from viewer.cli import main

sys.exit(main())
