"""Shipped latency tables (data package; see nas.latency.table)."""
