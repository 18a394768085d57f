"""Audience size history: one point per audience and hour, found by id, never by a scan."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)


def history_bucket(at: datetime) -> str:
    """The hour a point belongs to: `2025-01-31T09` (UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


def history_point_id(audience_id: str, at: datetime) -> str:
    return f"{audience_id}|{history_bucket(at)}"


def hours_between(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every hour from the one holding `start` to the one holding `end`, both included."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        yield hour
        hour += HOUR
