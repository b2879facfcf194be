"""The demo's ground truth: outlines of each slide's nuclei-dense tissue, as a pathologist exports them.

The localisation figures (AUROC, top-k inside, Dice: scoremap.localization) need an annotation
that was not made from the model's patches. These outlines are measured from the slide's pixels
on a grid of their own (CELL level-0 px, unrelated to any patch grid): the haematoxylin-dense
("nuclear") pixels are found as demo.features finds them (colour deconvolution at 4x), their
share over a sliding window one patch wide gives a density map, and the tissue where that
density exceeds the demo's DENSE_THRESHOLD (the same rule that makes a patch nuclei-dense) is
outlined, smoothed as a hand-drawn outline would be, and simplified. A slide with no such tissue
(the stroma slide) gets no file, as a slide without tumour gets no annotation.

The files are written in the two formats the viewer reads: QuPath's GeoJSON export for the real
scan and ASAP's XML (CAMELYON16's format) for the tiled slide, so the demo exercises both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely
from scipy import ndimage

from demo.features import _OD_LUT, NUCLEI_H, TISSUE_OD, UNMIX
from scoremap.atomic import atomic_output
from scoremap.regions import union_geometry

CLASS_NAME = "Nuclei-dense"
COLOUR = (170, 40, 200)  # QuPath-style RGB of the class
CELL = 32  # level-0 px per cell of the density map
ANALYSIS_DOWNSAMPLE = 4  # as demo.features: nuclei are counted on 4x-reduced pixels
STRIP_ROWS = 1024  # analysis rows read per OpenSlide call


def nuclear_share(slide_path: os.PathLike | str) -> np.ndarray:
    """(ny, nx) share of nuclear pixels in each CELL x CELL level-0 cell, read strip by strip."""
    import openslide

    with openslide.OpenSlide(str(slide_path)) as slide:
        level = slide.get_best_level_for_downsample(ANALYSIS_DOWNSAMPLE * 1.001)
        lds = float(slide.level_downsamples[level])
        factor = max(1, round(ANALYSIS_DOWNSAMPLE / lds))  # further reduction to 4x
        per_cell = CELL // ANALYSIS_DOWNSAMPLE  # analysis px per cell side
        w0, h0 = slide.dimensions
        nx, ny = w0 // CELL, h0 // CELL
        out = np.zeros((ny, nx), np.float32)
        step = STRIP_ROWS // per_cell * per_cell
        width = nx * per_cell * factor  # level px
        for top in range(0, ny * per_cell, step):
            rows = min(step, ny * per_cell - top)
            region = slide.read_region(
                (0, int(top * ANALYSIS_DOWNSAMPLE)), level, (width, rows * factor)
            )
            rgb = np.asarray(region.convert("RGB"), np.float32)
            if factor > 1:
                rgb = rgb.reshape(rows, factor, -1, factor, 3).mean((1, 3))
            od = _OD_LUT[(rgb + 0.5).astype(np.uint8)]
            nuclear = ((od @ UNMIX[:, 0]) > NUCLEI_H) & (od.sum(-1) > TISSUE_OD)
            cells = nuclear.reshape(rows // per_cell, per_cell, nx, per_cell).mean((1, 3))
            out[top // per_cell : top // per_cell + len(cells)] = cells
    return out


def dense_outline(slide_path: os.PathLike | str, window_l0: int, threshold: float):
    """The slide's nuclei-dense tissue as a shapely (Multi)Polygon in level-0 px (maybe empty):
    where the nuclear share over a `window_l0`-px window exceeds `threshold`."""
    share = nuclear_share(slide_path)
    window = max(1, round(window_l0 / CELL))
    density = ndimage.uniform_filter(share, window, mode="constant")
    ys, xs = np.nonzero(density > threshold)
    geometry = union_geometry(np.column_stack((xs, ys)) * CELL, CELL)
    if geometry.is_empty:
        return geometry
    # a hand-drawn outline: rounded over a few cells, no staircase, no islands smaller than a window
    smooth = geometry.buffer(2 * CELL).buffer(-2 * CELL).simplify(CELL / 2)
    parts = [p for p in getattr(smooth, "geoms", [smooth]) if p.area >= window_l0**2]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _polygons(geometry) -> list:
    return [p for p in getattr(geometry, "geoms", [geometry]) if not p.is_empty]


def write_qupath(path: Path, geometry) -> None:
    """A QuPath GeoJSON export: one annotation Feature per polygon, classified CLASS_NAME."""
    features = [
        {
            "type": "Feature",
            "id": f"nuclei-dense-{i}",
            "geometry": json.loads(shapely.to_geojson(shapely.set_precision(p, 1.0))),
            "properties": {
                "objectType": "annotation",
                "classification": {"name": CLASS_NAME, "color": list(COLOUR)},
            },
        }
        for i, p in enumerate(_polygons(geometry))
    ]
    with atomic_output(path) as tmp:
        tmp.write_text(
            json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n"
        )


def write_asap(path: Path, geometry) -> None:
    """An ASAP XML file as CAMELYON16's: one Polygon Annotation per ring, holes in group `_2`."""

    def annotation(i: int, ring, group: str, colour: str) -> str:
        points = "".join(
            f'<Coordinate Order="{k}" X="{x:.0f}" Y="{y:.0f}" />'
            for k, (x, y) in enumerate(list(ring.coords)[:-1])
        )
        return (
            f'<Annotation Name="Annotation {i}" Type="Polygon" PartOfGroup={quoteattr(group)} '
            f'Color="{colour}"><Coordinates>{points}</Coordinates></Annotation>'
        )

    hexed = "#{:02X}{:02X}{:02X}".format(*COLOUR)
    items = []
    for p in _polygons(geometry):
        items.append(annotation(len(items), p.exterior, CLASS_NAME, hexed))
        for ring in p.interiors:
            items.append(annotation(len(items), ring, "_2", "#64FE2E"))
    text = (
        '<?xml version="1.0"?>\n<ASAP_Annotations>\n<Annotations>\n'
        + "\n".join(items)
        + f'\n</Annotations>\n<AnnotationGroups><Group Name={quoteattr(CLASS_NAME)} PartOfGroup="None" '
        f'Color="{hexed}"><Attributes /></Group><Group Name="_2" PartOfGroup="None" Color="#64FE2E">'
        "<Attributes /></Group></AnnotationGroups>\n</ASAP_Annotations>\n"
    )
    with atomic_output(path) as tmp:
        tmp.write_text(text)
