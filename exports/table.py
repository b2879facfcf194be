"""`{slide_id}_patches.csv`: one row per patch, WSInfer's tile-table shape.

`slide_id,index,minx,miny,width,height,attention,percentile,rank` (level-0 pixels; attention as the
model stores it; percentile 0..100 and rank 1 = most attended, for the exported class), then one
`attention_<class>` column per class where the model keeps per-class attention. Written a block of
rows at a time: a million patches never become a million Python rows.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from exports.options import CLASS_PREFIX, SlideScores
from scoremap.atomic import atomic_output

_ROWS = 65536


def header(scores: SlideScores) -> list[str]:
    bm = scores.blockmap
    columns = ["slide_id", "index", "minx", "miny", "width", "height", "attention", "percentile", "rank"]
    if bm.attention_per_class is not None:
        columns += [CLASS_PREFIX + name for name in bm.class_names]
    return columns


def write_table(scores: SlideScores, path: Path) -> Path:
    bm = scores.blockmap
    n = bm.bag_size
    quoted_id = '"' + bm.slide_id.replace('"', '""') + '"' if any(c in bm.slide_id for c in ',"\n') else bm.slide_id
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(header(scores)) + "\n")
        for start in range(0, n, _ROWS):
            rows = slice(start, min(n, start + _ROWS))
            index = np.arange(rows.start, rows.stop)
            columns = [index, bm.l0_coords[rows, 0], bm.l0_coords[rows, 1],
                       np.full(len(index), bm.l0_patch), np.full(len(index), bm.l0_patch)]
            numbers = [scores.raw[rows], scores.percentile[rows]]
            block = io.StringIO()
            extra = [] if bm.attention_per_class is None else [bm.attention_per_class[rows, c]
                                                               for c in range(bm.n_classes)]
            for i in range(len(index)):
                fields = [quoted_id] + [str(int(c[i])) for c in columns]
                fields += [_number(numbers[0][i]), _number(numbers[1][i]), str(int(scores.rank[rows][i]))]
                fields += [_number(c[i]) for c in extra]
                block.write(",".join(fields) + "\n")
            fh.write(block.getvalue())
    return path


def _number(value: float) -> str:
    value = float(value)
    return repr(value) if np.isfinite(value) else ""
