"""Exports of scored slides to the tools pathologists work in (no torch, blockmaps only).

`python export_heatmaps.py --config FILE --to qupath,csv` (= `mil-export`). One module a format:
`table` (WSInfer-shaped patch CSV), `qupath` (GeoJSON tiles with measurements, and regions above a
threshold); `options` holds the colouring options shared with the overlay tiles; `cli` the command.
"""
