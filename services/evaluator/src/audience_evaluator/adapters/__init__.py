"""Adapters of the evaluator: one technology each."""
