"""Frequency caps of campaign audiences: the `N/period` form and the period a moment falls in."""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

CapPeriod = Literal["session", "day", "week", "month", "lifetime"]

MAX_CAP = 1_000_000

_CAP = re.compile(r"^\s*(\d{1,7})\s*/\s*(session|day|week|month|lifetime)\s*$")


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    limit: int
    period: CapPeriod

    def __str__(self) -> str:
        return f"{self.limit}/{self.period}"

    def period_key(self, now: datetime, session_id: str | None) -> str:
        """The counter a resolve at `now` in `session_id` adds to.

        Calendar periods in UTC (day, ISO week starting Monday, month) rather than rolling
        windows: each period is one counter document looked up by id, and "3/day" resets at
        midnight UTC the way people read it. Without a session id, every resolve of the user
        shares one session, so a session cap is never exceeded.
        """
        if self.period == "session":
            return f"session:{session_id or '-'}"
        if self.period == "day":
            return f"day:{now:%Y-%m-%d}"
        if self.period == "week":
            year, week, _ = now.isocalendar()
            return f"week:{year}-W{week:02d}"
        if self.period == "month":
            return f"month:{now:%Y-%m}"
        return "lifetime"


def parse_frequency_cap(text: str) -> FrequencyCap:
    """`"3/day"` → FrequencyCap(3, "day"); raises ValueError naming the accepted form."""
    found = _CAP.match(text)
    if found is None:
        raise ValueError(
            'frequency_cap must look like "N/session", "N/day", "N/week", "N/month" or "N/lifetime"'
        )
    limit = int(found.group(1))
    if not 1 <= limit <= MAX_CAP:
        raise ValueError(f"frequency_cap's N must be between 1 and {MAX_CAP}")
    period: CapPeriod = found.group(2)  # type: ignore[assignment]
    return FrequencyCap(limit, period)
