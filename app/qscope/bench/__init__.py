"""Benchmarks, run as `qscope bench NAME` (or `python -m qscope.bench.NAME`): each measures what users meet,
side by side in one run, and prints a JSON line last."""
