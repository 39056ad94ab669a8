"""Discover: example sets -> ranked, validated features; detectors over a few features; dataset footprints."""
