"""Ground-truth annotations of a slide, as pathologists export them: QuPath GeoJSON or ASAP XML.

- `{slide_id}.geojson`: QuPath's "Export objects" (a FeatureCollection, a list of Features, or one
  Feature); Polygon / MultiPolygon geometries in level-0 pixels (null geometries skipped); the class
  from `properties.classification.name` (QuPath >= 0.4; derived classes' `names` joined as QuPath
  shows them, "Tumor: Positive"; `properties.classification` as a plain string and
  `properties.name` are read too), its colour from `classification.color` ([r, g, b]) or
  `colorRGB` (QuPath 0.2's packed integer). Other geometry types (points, lines) carry no area and
  are skipped.
- `{slide_id}.xml`: ASAP's `<ASAP_Annotations>`: every `<Annotation Type="Polygon|Spline|Rectangle">`
  with its `<Coordinate X= Y= Order=>` points, the class from `PartOfGroup` (else `Name`), the colour
  from the annotation's or its group's `Color`. ASAP stores "holes" as annotations of a group named
  `_2` or `Exclusion` (CAMELYON16's convention): they are subtracted from the other classes.

Every polygon is made valid (shapely's make_valid), classes are merged into one (Multi)Polygon
each. A file that cannot be read is an AnnotationError naming it and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon, shape
from shapely.geometry.base import BaseGeometry

from scoremap.errors import ScoreMapError

DEFAULT_COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
]
EXCLUSION_GROUPS = {"_2", "exclusion", "excluded"}

Colour = tuple[int, int, int]
#: One polygon read from a file: (class name, its colour if the file gives one, geometry).
Part = tuple[str, Colour | None, BaseGeometry]


class AnnotationError(ScoreMapError):
    """An annotation file that is not QuPath GeoJSON or ASAP XML as expected."""


@dataclass(frozen=True)
class AnnotatedClass:
    name: str
    colour: Colour
    geometry: BaseGeometry  # shapely (Multi)Polygon, level-0 pixels

    @property
    def area(self) -> float:
        return float(self.geometry.area)


def annotation_file(
    folder: os.PathLike[str] | str, slide_id: str, slide_name: str | None = None
) -> Path | None:
    """`{folder}/{slide_id}.geojson` or `.json` or `.xml`, whichever exists first; then the same
    after the slide's file name (`{slide_file}.geojson`: QuPath names exports after the image)."""
    stems = [slide_id] + ([slide_name] if slide_name and slide_name != slide_id else [])
    for stem in stems:
        for ext in (".geojson", ".json", ".xml"):
            path = Path(folder) / f"{stem}{ext}"
            if path.is_file():
                return path
    return None


def _hex(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    text = text.strip().lstrip("#")
    if len(text) != 6:
        return None
    try:
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    except ValueError:
        return None


def _qupath_class(props: dict[str, Any]) -> tuple[str, Colour | None]:
    cls = props.get("classification")
    colour: Colour | None = None
    if isinstance(cls, dict):
        name = cls.get("name")
        names = cls.get("names")  # QuPath >= 0.4, derived classes: ["Tumor", "Positive"]
        if not name and isinstance(names, list) and names:
            name = ": ".join(str(n) for n in names)  # as QuPath shows them
        rgb = cls.get("color") or cls.get("colorRGB")
    else:
        name, rgb = cls, props.get("color") or props.get("colorRGB")
    if isinstance(rgb, (list, tuple)) and len(rgb) >= 3:
        try:  # a colour that is not three numbers 0..255 is ignored: the class gets a default one
            r, g, b = (int(v) for v in rgb[:3])
            colour = (r, g, b)
        except (TypeError, ValueError, OverflowError):
            colour = None
        if colour is not None and not all(0 <= v <= 255 for v in colour):
            colour = None
    elif isinstance(rgb, int) and not isinstance(rgb, bool):  # QuPath 0.2: packed (A)RGB
        colour = ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255)
    name = name or props.get("name") or "annotation"
    return str(name), colour


def _read_geojson(path: Path) -> tuple[list[Part], int]:
    """(polygons as (class, colour, geometry), how many features have a geometry)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnnotationError(f"{path}: not a readable GeoJSON file ({exc})") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    else:
        features = doc
    if not isinstance(features, list):
        raise AnnotationError(f"{path}: expected a GeoJSON FeatureCollection or a list of Features")
    out: list[Part] = []
    located = (
        0  # features with a geometry (a negative slide's export has none: no classes, no error)
    )
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or "geometry" not in feature:
            raise AnnotationError(f"{path}: feature {i} has no geometry")
        if feature["geometry"] is None:  # RFC 7946: an unlocated feature (an empty region export)
            continue
        if not isinstance(feature["geometry"], dict):
            raise AnnotationError(f"{path}: feature {i}: geometry must be an object")
        located += 1
        if feature["geometry"].get("type") not in ("Polygon", "MultiPolygon"):
            continue
        try:
            with warnings.catch_warnings():  # NaN coordinates: refused below, with the file named
                warnings.simplefilter("ignore", RuntimeWarning)
                geometry = shape(feature["geometry"])
        except (
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            shapely.errors.GEOSException,
        ) as exc:
            raise AnnotationError(f"{path}: feature {i}: malformed geometry ({exc})") from None
        if not np.isfinite(shapely.get_coordinates(geometry)).all():
            raise AnnotationError(f"{path}: feature {i}: coordinates must be finite numbers")
        props = feature.get("properties")
        name, colour = _qupath_class(props if isinstance(props, dict) else {})
        out.append((name, colour, geometry))
    return out, located


def _read_asap(path: Path) -> tuple[list[Part], int]:
    """(polygons as (class, colour, Polygon), how many annotations the file holds)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise AnnotationError(f"{path}: not a readable ASAP XML file ({exc})") from None
    groups = {g.get("Name"): _hex(g.get("Color")) for g in root.iter("Group")}
    out: list[Part] = []
    located = 0
    for i, ann in enumerate(root.iter("Annotation")):
        located += 1
        if (ann.get("Type") or "Polygon").lower() not in ("polygon", "spline", "rectangle"):
            continue
        points: list[tuple[float, float, float]] = []
        for c in ann.iter("Coordinate"):
            try:
                x, y = c.get("X"), c.get("Y")
                if x is None or y is None:
                    raise ValueError("missing X or Y")
                points.append((float(c.get("Order", len(points))), float(x), float(y)))
            except (TypeError, ValueError):
                raise AnnotationError(
                    f"{path}: annotation {ann.get('Name') or i}: a Coordinate without numeric "
                    "X and Y"
                ) from None
        if len(points) < 3:
            continue
        points.sort()
        group = ann.get("PartOfGroup")
        name = group if group and group != "None" else (ann.get("Name") or "annotation")
        colour = _hex(ann.get("Color")) or groups.get(group)
        if not all(math.isfinite(v) for _, x, y in points for v in (x, y)):
            raise AnnotationError(
                f"{path}: annotation {ann.get('Name') or i}: coordinates must be finite numbers"
            )
        out.append((name, colour, Polygon([(x, y) for _, x, y in points])))
    return out, located


def read_annotations(path: os.PathLike[str] | str) -> list[AnnotatedClass]:
    """The classes of one annotation file, each a valid (Multi)Polygon, exclusions subtracted."""
    path = Path(path)
    parts, located = _read_asap(path) if path.suffix.lower() == ".xml" else _read_geojson(path)
    try:
        classes = _classes(parts)
    except (ValueError, TypeError, shapely.errors.GEOSException) as exc:
        raise AnnotationError(f"{path}: polygons that cannot be combined ({exc})") from None
    if not classes and located:
        raise AnnotationError(
            f"{path}: holds no polygon annotations (points and lines have no area; "
            "expected Polygon/MultiPolygon features or ASAP Polygon annotations)"
        )
    return classes  # none at all: an empty export (a slide without the tissue outlined)


def _classes(parts: list[Part]) -> list[AnnotatedClass]:
    by_class: dict[str, list[BaseGeometry]] = {}
    colours: dict[str, Colour | None] = {}
    for name, colour, geometry in parts:
        by_class.setdefault(name, []).append(shapely.make_valid(geometry))
        colours[name] = colours.get(name) or colour
    excluded = [g for n in list(by_class) if n.lower() in EXCLUSION_GROUPS for g in by_class.pop(n)]
    hole = shapely.union_all(excluded) if excluded else None
    classes = []
    for i, (name, geometries) in enumerate(sorted(by_class.items())):
        union = shapely.union_all(geometries)
        if hole is not None:
            union = union.difference(hole)
        union = polygons_only(union)
        if union.is_empty or union.area == 0:
            continue
        colour = colours.get(name) or DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]
        classes.append(AnnotatedClass(name, colour, union))
    return classes


def polygons_only(geometry: BaseGeometry) -> BaseGeometry:
    """The areal part of a geometry (make_valid and clipping may leave lines and points beside
    polygons)."""
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    polygons = [
        g for g in getattr(geometry, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")
    ]
    return shapely.union_all(polygons) if polygons else Polygon()
