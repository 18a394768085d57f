"""Subcommands of `audience`, one module per group."""
