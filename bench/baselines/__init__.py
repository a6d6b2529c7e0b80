"""Baselines the gateway is compared with in `make bench-peers` (bench/peers.py)."""
