"""Executors (being written)."""
