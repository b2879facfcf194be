"""The repository checkout the code runs from, and the folders in it that the code reads.

`make install` installs the project editable (`pip install -e .`), so the packages import from the
checkout, and some of what they read lies beside them there rather than under the working
directory or inside a package:

- `node_modules/`: OpenSeadragon, which the viewer serves (`npm ci`, never committed), and the
  viewer's `templates/` and `static/` (Flask's root path);
- `data/` (`DATA_DIR`, git-ignored): the CMU scan read out of its wheel, the demo (`DEMO_DIR`) the
  benches start from, the benches' own slides;
- the demo's scoring configs, whose relative paths are taken from the repository root.

Tests, benches and the demo import `REPO_ROOT` from here too, so there is one answer to "where is
the checkout".
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
DEMO_DIR = DATA_DIR / "demo"
