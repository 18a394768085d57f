"""Audiences sync service."""
