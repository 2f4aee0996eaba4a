"""Shipped search-space files (data package; see nas.space.load_space)."""
