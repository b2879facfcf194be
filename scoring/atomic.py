"""Write-then-rename, so that a run killed at any moment (even SIGKILL) leaves no half-written output.

A partial file lives under a hidden name beside its final path (same filesystem, so the rename is
atomic) and is renamed only once complete; readers never see a truncated PNG or HDF5 file.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"


def partial_path(final: Path) -> Path:
    """Hidden sibling of `final`, keeping its extension so that writers infer the format from it."""
    final = Path(final)
    return final.with_name(f".{final.stem}{PARTIAL_MARK}{os.getpid()}{final.suffix}")


@contextmanager
def atomic_output(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success rename it to `final`, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_partials(folder: Path) -> int:
    """Delete partial files that a killed run left behind; returns how many were removed."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for path in Path(folder).rglob(f".*{PARTIAL_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
