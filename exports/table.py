"""`{slide_id}_patches.csv`: one row per patch, WSInfer's tile-table shape.

`slide_id,index,minx,miny,width,height,attention,percentile,rank` (level-0 pixels; attention as the
model stores it; percentile 0..100 and rank 1 = most attended, for the exported class), then one
`attention_<class>` column per class where the model keeps per-class attention. Written a block of
rows at a time: a million patches never become a million Python rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import numpy as np

from exports.options import CLASS_PREFIX, ExportScores
from scoremap.atomic import atomic_output
from scoremap.normalize import percent

_ROWS = 65536


def header(scores: ExportScores) -> list[str]:
    bm = scores.blockmap
    columns = [
        "slide_id",
        "index",
        "minx",
        "miny",
        "width",
        "height",
        "attention",
        "percentile",
        "rank",
    ]
    if bm.attention_per_class is not None:
        columns += [CLASS_PREFIX + name for name in bm.class_names]
    return columns


def write_table(scores: ExportScores, path: Path) -> Path:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        write_rows(scores, fh)
    return path


def write_rows(scores: ExportScores, fh: TextIO) -> None:
    """The table into an open text file (the export CLI's file, or the viewer's response)."""
    bm = scores.blockmap
    n = bm.bag_size
    quoted_id = (
        '"' + bm.slide_id.replace('"', '""') + '"'
        if any(c in bm.slide_id for c in ',"\n')
        else bm.slide_id
    )
    per_class = bm.attention_per_class
    fh.write(",".join(header(scores)) + "\n")
    s = int(bm.l0_patch)
    for start in range(0, n, _ROWS):
        stop = min(n, start + _ROWS)
        coords = bm.l0_coords[start:stop].tolist()
        raw, pct = (
            scores.raw[start:stop].tolist(),
            percent(scores.percentile01[start:stop]).tolist(),
        )
        rank = scores.rank[start:stop].tolist()
        extra = per_class[start:stop].tolist() if per_class is not None else None
        lines = []
        for i, (x, y) in enumerate(coords):
            line = f"{quoted_id},{start + i},{x},{y},{s},{s},{_number(raw[i])},{_number(pct[i])},{rank[i]}"
            if extra is not None:
                line += "," + ",".join(_number(v) for v in extra[i])
            lines.append(line)
        fh.write("\n".join(lines) + "\n")


def _number(value: float) -> str:
    value = float(value)
    return repr(value) if np.isfinite(value) else ""
