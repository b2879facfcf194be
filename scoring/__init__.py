"""Cohort scoring: config -> slides -> features -> model -> attention -> outputs.

Importing this package, or its torch-free modules `config` and `errors` (and the `models`
registry, which loads models lazily), must not import torch: the viewer reads scoring configs
through them. What scoring writes and the viewer reads (the blockmap, the score grid, the
colormap) is the torch-free core, `scoremap`.
"""
