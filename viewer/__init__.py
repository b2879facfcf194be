"""The browser viewer's server: Deep Zoom slide tiles, lazily coloured overlay tiles, a JSON API.

Torch-free by design: nothing under `viewer/` imports torch or the `scoring` modules that do,
so a viewer process starts in a fraction of a second and stays small per gunicorn worker.
"""
