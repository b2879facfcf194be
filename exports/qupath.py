"""QuPath GeoJSON: every patch as a tile with measurements, and the regions above a threshold.

`{slide_id}.geojson`: a FeatureCollection in QuPath (>= 0.4)'s own form, one Feature per patch:
`geometry` the patch square in level-0 pixels (QuPath's image coordinates), `id` a UUID (derived
from the slide and the patch index, so a re-export gives the same ids), `properties.objectType`
"tile", `properties.measurements` numbers: `attention` (as the model stores it),
`attention_percentile` (0..100) and one `attention_<class>` per class where the model keeps
per-class attention. QuPath's "Measure > Show measurement maps" colours the tiles by any of them.

`{slide_id}_regions.geojson` (with a threshold): one annotation whose geometry is the union of the
squares of the patches whose normalised score is >= T, overlapping patches merged (shapely), a
MultiPolygon where the regions are apart; classified "attention >= T" in the colormap's colour at T,
measured: `area_px` (level-0 px^2), `area_um2` (when the slide has an MPP), `n_patches`,
`mean_attention`. Both files are written feature by feature (bounded memory) and renamed when done.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import shapely

from exports.options import CLASS_PREFIX, ExportScores
from scoremap.atomic import atomic_output
from scoremap.colormap import lookup_table
from scoremap.normalize import in_range, percent
from scoremap.regions import union_geometry

_BLOCK = 65536  # features formatted per block
_NAMESPACE = uuid.UUID("6f1b3d0e-8a51-4b5e-9c1f-6d8a1a2b3c4d")


def patch_uuid(slide_id: str, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{index}"))


def _num(value) -> float | None:  # for json.dumps
    value = float(value)
    return value if np.isfinite(value) else None


def _json_number(value: float) -> str:
    return repr(float(value)) if np.isfinite(value) else "null"


def write_tiles(scores: ExportScores, path: Path) -> Path:
    """One Feature per patch, formatted from a template (json.dumps of a million nested dicts takes
    minutes); the output is plain JSON, which the tests read back with json."""
    bm = scores.blockmap
    s = int(bm.l0_patch)
    per_class = bm.attention_per_class
    names = [json.dumps(CLASS_PREFIX + n) for n in bm.class_names] if per_class is not None else []
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for start in range(0, bm.bag_size, _BLOCK):  # Python lists of one block at a time
            stop = min(bm.bag_size, start + _BLOCK)
            coords = bm.l0_coords[start:stop].tolist()
            raw, percentile = (
                scores.raw[start:stop].tolist(),
                percent(scores.percentile01[start:stop]).tolist(),
            )
            extra = per_class[start:stop].tolist() if per_class is not None else None
            lines = []
            for j, (x, y) in enumerate(coords):
                i = start + j
                x2, y2 = x + s, y + s
                measurements = (
                    f'"attention":{_json_number(raw[j])},'
                    f'"attention_percentile":{_json_number(percentile[j])}'
                )
                if extra is not None:
                    measurements += "".join(
                        f",{name}:{_json_number(v)}"
                        for name, v in zip(names, extra[j], strict=True)
                    )
                lines.append(
                    f'{"" if i == 0 else ","}{{"type":"Feature","id":"{patch_uuid(bm.slide_id, i)}",'
                    f'"geometry":{{"type":"Polygon","coordinates":[[[{x},{y}],[{x2},{y}],[{x2},{y2}],'
                    f'[{x},{y2}],[{x},{y}]]]}},"properties":{{"objectType":"tile",'
                    f'"measurements":{{{measurements}}}}}}}'
                )
            fh.write("\n".join(lines) + "\n")
        fh.write("]}\n")
    return path


def region_geometry(scores: ExportScores, lo: float, hi: float = 1.0):
    """The union of the squares of the patches whose normalised score lies in [lo, hi] (scoremap.regions:
    exact, a second for a million patches), and which patches those are."""
    bm = scores.blockmap
    chosen = in_range(scores.values01, lo, hi)
    return union_geometry(bm.l0_coords[chosen], bm.l0_patch), chosen


def region_feature(
    scores: ExportScores,
    threshold: float,
    cmap: str,
    mpp: tuple[float, float] | None,
    hi: float = 1.0,
) -> dict:
    """The regions of the patches scored in [threshold, hi] as one QuPath annotation Feature."""
    bm = scores.blockmap
    union, chosen = region_geometry(scores, threshold, hi)
    label = f"attention >= {threshold:g}" if hi >= 1.0 else f"attention in [{threshold:g}, {hi:g}]"
    area_px = float(union.area)
    colour = lookup_table(cmap, 256)[round(min(max(threshold, 0.0), 1.0) * 255)]
    measurements = {
        "area_px": area_px,
        "n_patches": int(chosen.sum()),
        "mean_attention": _num(scores.raw[chosen].mean()) if chosen.any() else None,
    }
    if mpp is not None:
        measurements["area_um2"] = area_px * mpp[0] * mpp[1]
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, f"{bm.slide_id}/regions/{threshold:g}/{hi:g}")),
        "geometry": json.loads(shapely.to_geojson(union)) if not union.is_empty else None,
        "properties": {
            "objectType": "annotation",
            "name": f"{bm.class_names[scores.class_index]} {label}",
            "classification": {"name": label, "color": [int(v) for v in colour]},
            "measurements": measurements,
        },
    }


def write_regions(
    scores: ExportScores, threshold: float, cmap: str, mpp: tuple[float, float] | None, path: Path
) -> Path:
    feature = region_feature(scores, threshold, cmap, mpp)
    with atomic_output(path) as tmp:
        tmp.write_text(
            json.dumps({"type": "FeatureCollection", "features": [feature]}), encoding="utf-8"
        )
    return path
