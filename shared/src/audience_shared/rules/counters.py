"""Per-profile event counters: which event conditions need one, their stable keys and specs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from audience_shared.profile import to_utc_ms
from audience_shared.rules.model import AbsoluteWindow, EventCondition, TraitCondition


def uses_counter(condition: EventCondition) -> bool:
    """Property filters and absolute windows cannot be answered from `events.<name>`."""
    return bool(condition.where) or isinstance(condition.window, AbsoluteWindow)


def counter_key(condition: EventCondition) -> str:
    """A key that is equal for conditions counting the same events, in any process.

    The relative window is not part of the key: one `recent` list answers every window up to
    the retention, so "purchase where amount > 100" in the last 7 and 30 days share a counter.
    """
    window = condition.window
    payload = {
        "event": condition.event,
        "where": sorted(
            json.dumps(item.model_dump(mode="json"), sort_keys=True) for item in condition.where
        ),
        "from": window.from_.isoformat() if isinstance(window, AbsoluteWindow) else None,
        "to": window.to.isoformat() if isinstance(window, AbsoluteWindow) else None,
    }
    digest = hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()
    return "c_" + digest[:24]


@dataclass(frozen=True, eq=False)
class CounterSpec:
    """What one counter counts; the evaluator keeps `counters.<key>` up to date with `matches`.

    `keeps_recent` says the counter also needs its `recent` timestamp list (a relative window
    reads it); `retention` is the longest such window.
    """

    key: str
    event: str
    where: tuple[TraitCondition, ...]
    window_from: datetime | None
    window_to: datetime | None
    keeps_recent: bool
    retention: timedelta | None
    where_test: Callable[[Mapping[str, Any]], bool] = field(repr=False)

    def matches(self, event_name: str, properties: Mapping[str, Any], at: datetime) -> bool:
        """Whether a tracked event counts towards this counter."""
        if event_name != self.event:
            return False
        if self.window_from is not None and self.window_to is not None:
            moment = to_utc_ms(at)
            if not self.window_from <= moment <= self.window_to:
                return False
        return self.where_test(properties)

    def merged(self, other: CounterSpec) -> CounterSpec:
        """The spec serving both conditions that share this key."""
        retentions = [value for value in (self.retention, other.retention) if value is not None]
        return CounterSpec(
            key=self.key,
            event=self.event,
            where=self.where,
            window_from=self.window_from,
            window_to=self.window_to,
            keeps_recent=self.keeps_recent or other.keeps_recent,
            retention=max(retentions) if retentions else None,
            where_test=self.where_test,
        )
