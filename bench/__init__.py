"""Benchmarks: a load generator and a runner against the real gateway over loopback."""
