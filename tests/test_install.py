"""The installed project: console scripts anywhere, thin top-level scripts, a torch-free core."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

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


@pytest.mark.parametrize("script,wrapper", [("mil-heatmaps", "create_heatmaps.py"), ("mil-viewer", "run_viewer.py")])
def test_console_scripts_run_from_any_folder_like_the_top_level_scripts(tmp_path, script, wrapper):
    exe = BIN / script
    assert exe.exists(), f"{exe} missing: the project is not installed (make install runs pip install -e .)"
    installed = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    direct = subprocess.run([sys.executable, str(REPO_ROOT / wrapper), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and direct.returncode == 0, installed.stderr + direct.stderr
    assert installed.stdout.split("\n\n", 1)[1] == direct.stdout.split("\n\n", 1)[1]  # same options
    assert installed.stdout.startswith(f"usage: {script}")
    missing = subprocess.run([str(exe), "--config", "nope.yaml"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr


def test_the_core_imports_neither_torch_nor_scoring_nor_viewer():
    modules = ["scoremap." + p.stem for p in (REPO_ROOT / "scoremap").glob("*.py") if p.stem != "__init__"]
    code = NO_IMPORT.replace("ROOTS", repr({"torch", "scoring", "viewer"})) + "".join(f"import {m}\n" for m in modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(modules) >= 10


def test_no_source_file_edits_sys_path():
    offenders = [str(p.relative_to(REPO_ROOT)) for folder in ("scoremap", "scoring", "viewer", "demo", "bench", "tests")
                 for p in (REPO_ROOT / folder).rglob("*.py") if "sys.path" in p.read_text(encoding="utf-8")
                 and p.name != "test_install.py"]
    offenders += [name for name in ("create_heatmaps.py", "run_viewer.py")
                  if "sys.path" in (REPO_ROOT / name).read_text(encoding="utf-8")]
    assert offenders == []
