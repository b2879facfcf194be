"""Deep Zoom tile geometry: the one source of truth shared by slide tiles and overlay tiles.

Slide tiles are produced by openslide's `DeepZoomGenerator`; overlay tiles are painted from the
score grid. For the overlay to sit on the slide, both must agree on every Deep Zoom level size,
every tile's pixel box (overlap included) and the level-0 offset that `limit_bounds` adds. This
module derives that geometry from a slide's numbers alone (no OpenSlide handle, no pixels), the
way `DeepZoomGenerator.__init__` and `_get_tile_info` do, so it is cheap, pure and testable
against the generator tile by tile.

Coordinate planes, named as openslide's deepzoom.py names them and used as variable prefixes:
    t_   tile column/row within a Deep Zoom level
    z_   pixels of a Deep Zoom level
    l_   pixels of a slide level
    l0_  pixels of slide level 0 (patch coordinates live here)
A Deep Zoom level `dz` has a power-of-two downsample `d = 2 ** (n_levels - 1 - dz)` relative to
level 0, and z pixel (i, j) covers level-0 [off_x + j*d, off_x + (j+1)*d) x [off_y + i*d, ...),
where (off_x, off_y) is the `limit_bounds` offset. That is the exact plane of the slide tiles at
the deepest level, and within one z pixel of them at coarser levels (the generator reads a slide
level whose downsample may not be a power of two, and rounds read positions down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement, tostring

DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
BOUNDS_OFFSET_PROPS = ("openslide.bounds-x", "openslide.bounds-y")
BOUNDS_SIZE_PROPS = ("openslide.bounds-width", "openslide.bounds-height")


class TileAddressError(ValueError):
    """A Deep Zoom level, column or row that lies outside the pyramid."""


@dataclass(frozen=True)
class TileBox:
    """One tile's pixel box on its Deep Zoom level, overlap included, and that level's downsample."""

    dz_level: int
    z_x: int
    z_y: int
    z_w: int
    z_h: int
    l0_downsample: int


@dataclass(frozen=True)
class DeepZoomGeometry:
    """Sizes and tile boxes of a slide's Deep Zoom pyramid (as `DeepZoomGenerator` lays it out)."""

    tile_size: int
    overlap: int
    l0_offset: tuple[int, int]  # limit_bounds offset of the active area, level 0
    l0_dimensions: tuple[int, int]  # active-area size at level 0 == deepest Deep Zoom level size
    z_dimensions: tuple[tuple[int, int], ...]  # per Deep Zoom level, coarsest (1x1) first
    t_dimensions: tuple[tuple[int, int], ...]  # tiles per Deep Zoom level

    @classmethod
    def for_slide(
        cls,
        l0_dimensions: Sequence[int],
        level_dimensions: Sequence[Sequence[int]],
        properties: Mapping[str, str],
        tile_size: int = 254,
        overlap: int = 1,
        limit_bounds: bool = True,
    ) -> DeepZoomGeometry:
        """The pyramid of a slide with these dimensions and OpenSlide properties.

        With `limit_bounds`, the active area is the slide's `openslide.bounds-*` rectangle (the
        whole slide where absent): the Deep Zoom image starts at its top-left corner and its
        size is every slide level scaled by the bounds' share of level 0, rounded up.
        """
        if tile_size < 1 or overlap < 0:
            raise ValueError(
                f"tile size must be positive and overlap non-negative, got {tile_size}, {overlap}"
            )
        l0_w, l0_h = (int(v) for v in l0_dimensions)
        if limit_bounds:
            l0_offset = tuple(int(properties.get(p, 0)) for p in BOUNDS_OFFSET_PROPS)
            scale = tuple(
                int(properties.get(p, lim)) / lim
                for p, lim in zip(BOUNDS_SIZE_PROPS, (l0_w, l0_h), strict=True)
            )
            l_level0 = tuple(
                math.ceil(lim * s) for lim, s in zip(level_dimensions[0], scale, strict=True)
            )
        else:
            l0_offset = (0, 0)
            l_level0 = tuple(int(v) for v in level_dimensions[0])
        z_size = (int(l_level0[0]), int(l_level0[1]))
        z_dims = [z_size]
        while z_size[0] > 1 or z_size[1] > 1:
            z_size = (max(1, math.ceil(z_size[0] / 2)), max(1, math.ceil(z_size[1] / 2)))
            z_dims.append(z_size)
        z_dims.reverse()
        t_dims = tuple((math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in z_dims)
        return cls(
            tile_size=int(tile_size),
            overlap=int(overlap),
            l0_offset=(int(l0_offset[0]), int(l0_offset[1])),
            l0_dimensions=(int(l_level0[0]), int(l_level0[1])),
            z_dimensions=tuple(z_dims),
            t_dimensions=t_dims,
        )

    @property
    def level_count(self) -> int:
        return len(self.z_dimensions)

    def l0_downsample(self, dz_level: int) -> int:
        """Level-0 pixels per z pixel at this Deep Zoom level (a power of two)."""
        return 2 ** (self.level_count - 1 - dz_level)

    def l0_window(self) -> tuple[int, int, int, int]:
        """The level-0 box (x, y, w, h) that every Deep Zoom level shows."""
        return (*self.l0_offset, *self.l0_dimensions)

    def check_address(self, dz_level: int, t_col: int, t_row: int) -> None:
        """Raise TileAddressError unless (level, col, row) names a tile of this pyramid."""
        if not 0 <= dz_level < self.level_count:
            raise TileAddressError(f"level {dz_level} out of range 0..{self.level_count - 1}")
        t_cols, t_rows = self.t_dimensions[dz_level]
        if not (0 <= t_col < t_cols and 0 <= t_row < t_rows):
            raise TileAddressError(
                f"tile {t_col}_{t_row} out of range at level {dz_level} ({t_cols} x {t_rows} tiles)"
            )

    def tile_box(self, dz_level: int, t_col: int, t_row: int) -> TileBox:
        """The z-pixel box of a tile: `tile_size` plus `overlap` on each interior edge."""
        self.check_address(dz_level, t_col, t_row)
        t_lims = self.t_dimensions[dz_level]
        z_lims = self.z_dimensions[dz_level]
        box = []
        for t, t_lim, z_lim in zip((t_col, t_row), t_lims, z_lims, strict=True):
            z_tl = self.overlap if t != 0 else 0
            z_br = self.overlap if t != t_lim - 1 else 0
            z_start = t * self.tile_size - z_tl
            z_len = min(self.tile_size, z_lim - self.tile_size * t) + z_tl + z_br
            box.append((z_start, z_len))
        (z_x, z_w), (z_y, z_h) = box
        return TileBox(dz_level, z_x, z_y, z_w, z_h, self.l0_downsample(dz_level))

    def dzi(self, tile_format: str) -> str:
        """The .dzi XML, byte for byte what `DeepZoomGenerator.get_dzi(tile_format)` returns."""
        image = Element(
            "Image",
            TileSize=str(self.tile_size),
            Overlap=str(self.overlap),
            Format=tile_format,
            xmlns=DZI_NAMESPACE,
        )
        SubElement(
            image, "Size", Width=str(self.l0_dimensions[0]), Height=str(self.l0_dimensions[1])
        )
        return tostring(image, encoding="UTF-8", xml_declaration=False).decode("UTF-8")
