"""Audiences evaluator service."""
