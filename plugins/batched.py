"""Batched fits (being written)."""
