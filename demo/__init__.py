"""Demo and test data built from real tissue: the CMU-1-Small-Region scan and slides tiled from it."""
