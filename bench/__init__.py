"""Benchmarks that measure us against baselines run in the same invocation: `make bench`."""
