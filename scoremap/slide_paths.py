"""Which slide file belongs to a blockmap: always a real path under a configured root.

A blockmap names its slide (`slide_path`, written by the pipeline on the scoring machine), but
nothing may open a file because a blockmap, a symlink or a URL points at it (the viewer serves its
pixels to anyone who can reach it). The one rule, for every reader of a scored cohort:

- The roots are the configured slide folders (`data_dir` of a scoring config, or `--slides`),
  taken as real paths (symlinks resolved).
- A `slide_path` that exists is used as is, but only when its real path lies under a root;
  otherwise the slide is refused, even if a file of the same name lies under a root (the blockmap
  and the roots disagree, and guessing could show the wrong slide).
- A `slide_path` that does not exist here (a cohort scored elsewhere, slides moved) is looked for
  by name under each root: `root/<slide_path as relative>`, `root/<file name>`, then
  `root/<slide_id>.*`; the first hit whose real path is under a root is used.
- A candidate whose real path leaves the roots (a symlink to elsewhere) is refused, never followed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath


@dataclass(frozen=True)
class SlideLocation:
    """Where a slide was found (`path`, a real path under a root) or why not (`problem`, `status`)."""

    path: Path | None
    problem: str | None = None  # for clients: names files, never the server's folders
    status: int = 200  # 403 outside the roots, 404 not found
    detail: str | None = None  # for the server log: full paths


def real_roots(roots: Sequence[os.PathLike[str] | str]) -> tuple[Path, ...]:
    """The roots as absolute real paths, duplicates removed, order kept."""
    out: list[Path] = []
    for root in roots:
        real = Path(os.path.realpath(Path(root).expanduser()))
        if real not in out:
            out.append(real)
    return tuple(out)


def is_under(path: Path, roots: Sequence[Path]) -> bool:
    """True when the real path of `path` is one of the roots or lies inside one."""
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def _by_name(slide_path: str, slide_id: str, roots: Sequence[Path]) -> list[Path]:
    """Candidate files for a slide whose recorded path does not exist here, in rule order."""
    recorded = PurePath(slide_path) if slide_path else None
    candidates: list[Path] = []
    for root in roots:
        if recorded is not None and not recorded.is_absolute() and ".." not in recorded.parts:
            candidates.append(root / recorded)
        if recorded is not None and recorded.name:
            candidates.append(root / recorded.name)
        if slide_id and "/" not in slide_id and slide_id not in (".", ".."):
            with contextlib.suppress(OSError, ValueError):
                candidates.extend(
                    sorted(p for p in root.glob(f"{_glob_escape(slide_id)}.*") if p.is_file())
                )
    return candidates


def _glob_escape(name: str) -> str:
    """Escape glob metacharacters so that a slide id like `a[1]` matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def locate_slide(slide_path: str, slide_id: str, roots: Sequence[Path]) -> SlideLocation:
    """Apply the module's rules; `roots` must come from `real_roots`."""
    if not roots:
        return SlideLocation(None, "no slide folder is configured", 404)
    recorded = Path(slide_path).expanduser() if slide_path else None
    if recorded is not None and recorded.is_absolute() and recorded.exists():
        if is_under(recorded, roots):
            return SlideLocation(Path(os.path.realpath(recorded)))
        return _outside(recorded, roots)
    refused: Path | None = None
    for candidate in _by_name(slide_path, slide_id, roots):
        if not candidate.exists():
            continue
        if is_under(candidate, roots):
            return SlideLocation(Path(os.path.realpath(candidate)))
        refused = refused or candidate
    if refused is not None:
        return _outside(refused, roots)
    name = recorded.name if recorded is not None and recorded.name else slide_id
    return SlideLocation(
        None,
        f"slide file {name!r} not found in the slide folders",
        404,
        f"slide file {name!r} not found (recorded path {slide_path!r}; looked under "
        f"{', '.join(map(str, roots))})",
    )


def _outside(path: Path, roots: Sequence[Path]) -> SlideLocation:
    real = os.path.realpath(path)
    how = f" through a symlink to {real}" if str(path) != real else ""
    return SlideLocation(
        None,
        f"slide file {path.name!r} lies outside the configured slide folders; not served",
        403,
        f"{path}{how} lies outside the slide folders ({', '.join(map(str, roots))})",
    )
