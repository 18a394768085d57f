"""Adapters from shared contracts to one technology each (MongoDB query compilation)."""
