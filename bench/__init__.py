"""Reproducible benchmarks, each run as a script: `python bench/<name>.py` (docs/PERFORMANCE.md).

A package only so that mypy checks them under their own names (bench.edge is not edge).
"""
