"""Shipped latency tables (data package; see nas.table)."""
