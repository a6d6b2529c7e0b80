"""Micro-benchmarks of the gateway's hot functions (pytest-benchmark; `make bench-micro`)."""
