"""Cohort scoring: config -> slides -> features -> model -> attention -> outputs.

Importing this package (or its torch-free modules `blockmap`, `colormap`, `scoregrid`,
`errors`) must not import torch: the viewer reads what scoring writes through them.
"""
