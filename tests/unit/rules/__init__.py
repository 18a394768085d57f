"""Unit tests of the audience rule language."""
