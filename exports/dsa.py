"""A large_image / HistomicsUI (Digital Slide Archive) annotation document of the heatmap.

`{slide_id}_annotation.json`: `{"name", "description", "attributes", "elements"}` with one
`heatmap` element (large_image's annotation schema): a point at every patch centre, in level-0
(base layer) pixels, valued with the patch's normalised score, drawn with a radius of half a patch
that scales with the zoom, coloured by the colormap sampled at 11 stops over 0..1
(`normalizeRange: false`: the values already are on that scale). Upload it to the slide's item
(`POST /annotation?itemId=...`, or HistomicsUI's annotation upload) and HistomicsUI draws it over
the slide. Points rather than a `griddata` grid because CLAM and TRIDENT bags need not lie on one
lattice (overlapping bags, TRIDENT's odd offsets), and points sit exactly on their patches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exports.options import ExportOptions, ExportScores
from scoremap.atomic import atomic_output
from scoremap.colormap import lookup_table

STOPS = 11
_BLOCK = 65536


def colour_range(cmap: str) -> tuple[list[str], list[float]]:
    table = lookup_table(cmap, STOPS)
    return [f"rgb({r}, {g}, {b})" for r, g, b in table.tolist()], [
        i / (STOPS - 1) for i in range(STOPS)
    ]


def write_annotation(scores: ExportScores, options: ExportOptions, path: Path) -> Path:
    bm = scores.blockmap
    colours, stops = colour_range(options.cmap)
    half = bm.l0_patch / 2.0
    class_name = bm.class_names[scores.class_index]
    head = {
        "name": f"{bm.slide_id} attention ({class_name})",
        "description": (
            f"{bm.model_type} attention for class {class_name}, {options.norm}-normalised to 0..1, "
            f"one point per patch centre ({bm.bag_size} patches of {bm.l0_patch} px at level 0)"
        ),
        "attributes": {
            "slide_id": bm.slide_id,
            "model_type": bm.model_type,
            "class": class_name,
            "norm": options.norm,
            "cmap": options.cmap,
            "patch_size_level0": int(bm.l0_patch),
            "prediction": bm.class_names[bm.pred],
        },
    }
    element = {
        "type": "heatmap",
        "radius": half,
        "colorRange": colours,
        "rangeValues": stops,
        "normalizeRange": False,
        "scaleWithZoom": True,
        "label": {"value": f"attention ({class_name}, {options.norm})"},
    }
    values = np.asarray(scores.values01, np.float64)
    shown = np.flatnonzero(np.isfinite(values))
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        prefix = json.dumps(head)[:-1]  # the document without its closing brace
        fh.write(prefix + ', "elements": [' + json.dumps(element)[:-1] + ', "points": [')
        for start in range(0, len(shown), _BLOCK):
            rows = shown[start : start + _BLOCK]
            xy = (bm.l0_coords[rows] + half).tolist()
            vs = values[rows].tolist()
            fh.write(
                ("," if start else "")
                + ",".join(f"[{x},{y},0,{v!r}]" for (x, y), v in zip(xy, vs, strict=True))
            )
        fh.write("]}]}\n")
    return path
