"""The installed project: console scripts anywhere, thin top-level scripts, a torch-free core."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scoremap.checkout import REPO_ROOT

BIN = Path(sys.executable).parent

NO_IMPORT = """
import sys
class Refuse:
    def __init__(self, roots): self.roots = roots
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            raise ImportError(f"{name} must not be imported here")
sys.meta_path.insert(0, Refuse(ROOTS))
"""


@pytest.mark.parametrize(
    "script,wrapper", [("mil-heatmaps", "create_heatmaps.py"), ("mil-viewer", "run_viewer.py")]
)
def test_console_scripts_run_from_any_folder_like_the_top_level_scripts(tmp_path, script, wrapper):
    exe = BIN / script
    assert exe.exists(), (
        f"{exe} missing: the project is not installed (make install runs pip install -e .)"
    )
    installed = subprocess.run(
        [str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    direct = subprocess.run(
        [sys.executable, str(REPO_ROOT / wrapper), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.returncode == 0 and direct.returncode == 0, installed.stderr + direct.stderr
    assert installed.stdout.split("\n\n", 1)[1] == direct.stdout.split("\n\n", 1)[1]  # same options
    assert installed.stdout.startswith(f"usage: {script}")
    missing = subprocess.run(
        [str(exe), "--config", "nope.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        missing.returncode == 2
        and "nope.yaml" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_the_core_imports_neither_torch_nor_scoring_nor_viewer():
    modules = [
        "scoremap." + p.stem for p in (REPO_ROOT / "scoremap").glob("*.py") if p.stem != "__init__"
    ]
    code = NO_IMPORT.replace("ROOTS", repr({"torch", "scoring", "viewer"})) + "".join(
        f"import {m}\n" for m in modules
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(modules) >= 10


def test_no_source_file_edits_sys_path():
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for folder in ("scoremap", "scoring", "viewer", "demo", "bench", "tests")
        for p in (REPO_ROOT / folder).rglob("*.py")
        if "sys.path" in p.read_text(encoding="utf-8") and p.name != "test_install.py"
    ]
    offenders += [
        name
        for name in ("create_heatmaps.py", "run_viewer.py")
        if "sys.path" in (REPO_ROOT / name).read_text(encoding="utf-8")
    ]
    assert offenders == []


def _sources(*folders: str) -> dict[str, str]:
    return {
        str(p.relative_to(REPO_ROOT)): p.read_text(encoding="utf-8")
        for folder in folders
        for p in sorted((REPO_ROOT / folder).rglob("*.py"))
    }


def test_the_repository_root_is_found_in_one_place():
    """Everything that reads the checkout (node_modules, templates, data/, the demo config) takes
    scoremap.checkout.REPO_ROOT, so moving a package cannot leave one part looking elsewhere."""
    computed = [
        name
        for name, text in _sources(
            "scoremap", "scoring", "viewer", "exports", "demo", "bench", "tests"
        ).items()
        if ("Path(__file__)" in text or "REPO_ROOT =" in text) and name != "tests/test_install.py"
    ]
    assert computed == ["scoremap/checkout.py"]


def test_tests_and_benches_launch_one_chromium_and_tests_never_import_bench():
    """The browser's path and launch arguments live in tests/chromium.py alone (benches measure
    the browser the tests check); bench may import tests' helpers, never the other way round."""
    tests, benches = _sources("tests"), _sources("bench")
    marks = ("/usr/bin/chromium", "--disable-gpu", "chromium.launch(")
    launching = [
        name
        for name, text in {**tests, **benches}.items()
        if name != "tests/test_install.py" and any(mark in text for mark in marks)
    ]
    assert launching == ["tests/chromium.py"]
    importing = [
        name
        for name, text in tests.items()
        if re.search(r"^\s*(from|import) bench\b", text, re.MULTILINE)
    ]
    assert importing == []


@pytest.mark.slow
def test_a_plain_pip_install_serves_and_exports_without_torch(tmp_path, viewer_cohort):
    """`pip install .` (no extras) into a fresh venv: no torch; mil-viewer serves a scored cohort,
    mil-export runs, mil-heatmaps says which extra it needs (exit 2, no traceback). The versions
    are held to requirements.txt (-c) so that pip's cache serves them."""
    # from a copy of the tracked files: setuptools builds in the source folder (build/, *.egg-info)
    source = tmp_path / "source"
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            str(REPO_ROOT / "requirements.txt"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    assert (
        subprocess.run(
            [str(py), "-c", probe], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        == "True"
    ), "a plain install pulled in torch"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / args[0]), *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for script in ("mil-viewer", "mil-export", "mil-heatmaps"):
        shown = run(script, "--help")
        assert shown.returncode == 0 and shown.stdout.startswith(f"usage: {script}"), shown.stderr
    scoring = run("mil-heatmaps", "--config", str(viewer_cohort.config))
    assert scoring.returncode == 2 and "Traceback" not in scoring.stderr
    assert "pip install 'mil-heatmap-viewer[scoring]'" in scoring.stderr
    assert "torch" in scoring.stderr and len(scoring.stderr.strip().splitlines()) == 1
    exported = run(
        "mil-export", "--config", str(viewer_cohort.config), "--to", "csv", "--slides", "pyramid"
    )
    assert exported.returncode == 0, exported.stderr
    table = next((viewer_cohort.root / "production").rglob("pyramid_patches.csv"))
    assert len(table.read_text().splitlines()) == 1 + len(viewer_cohort.scored["pyramid"].l0_coords)

    port = str(_free_port())
    server = subprocess.Popen(
        [str(venv / "bin" / "mil-viewer"), "--config", str(viewer_cohort.config), "--port", port],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/api/slides", server)
        assert sorted(s["id"] for s in json.loads(body)["slides"]) == sorted(viewer_cohort.scored)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_when_up(url: str, server: subprocess.Popen[str], timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise AssertionError(f"mil-viewer exited: {server.communicate()[0]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
