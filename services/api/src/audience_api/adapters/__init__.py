"""Adapters of the gateway: one technology each."""
