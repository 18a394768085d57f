"""Audiences api service."""
