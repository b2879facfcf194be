"""The torch-free core that scoring and the viewer share: what a score map is and how it is drawn.

- `blockmap`: the per-slide HDF5 file (scores, coords, what produced them), its one reader/writer.
- `normalize`: raw attention to [0, 1] (percentile or min-max), as CLAM's heatmaps do.
- `grid`: the registration rule, patches painted on any raster window (static images, tiles).
- `pyramid`: a multi-resolution raster of normalised scores for views that meet too many patches.
- `raster`: the one window rasteriser: palette indices of a window, exact or cut from the pyramid.
- `colormap`: scores to palette indices, colours, palette PNGs and legends.
- `cache`: the one in-process cache, bounded in bytes, one load per key at a time.
- `slides`: opening a slide file (OpenSlide, or Pillow for plain images) and reading its scale (MPP).
- `slide_paths`: which slide file belongs to a blockmap (always a real path under a slide folder).
- `atomic`: write-then-rename for every output file.
- `checkout`: the repository root, and the folders beside the packages that the code reads.
- `defaults`: every default of the heatmap and the viewer, in one place.

It imports neither `scoring` nor `viewer`, and never torch (a test checks it in a subprocess).
Errors are the types of `scoremap.errors`; the CLI and the viewer turn them into one message each.
"""
