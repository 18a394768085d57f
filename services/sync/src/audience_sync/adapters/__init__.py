"""Adapters of the sync service: one technology each."""
