"""Contracts shared by the Audiences services: events, topics, rules, settings, logging."""
