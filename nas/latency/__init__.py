"""Latency lookup tables: measure every block on the target, predict networks, validate."""
