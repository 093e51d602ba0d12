"""Simulated sensor firmware for tests, demos and benchmarks."""
