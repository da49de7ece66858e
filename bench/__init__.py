"""Benchmarks: our gateway + worker against a bare Temporal update-and-activity baseline."""
