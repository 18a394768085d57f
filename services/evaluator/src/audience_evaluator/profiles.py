"""Folding user events into profile documents: pure functions, no I/O."""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from audience_shared.events import EventTracked, IntentSignalled, TraitsIdentified, UserEventBase
from audience_shared.profile import coerce_trait_value, encode_key
from audience_shared.rules import CounterSpec

Profile = dict[str, Any]

# Event ids remembered per user to drop redeliveries; a user's events share one partition, so a
# redelivery follows its original closely.
SEEN_IDS_KEPT = 500
RECENT_KEPT = 1000
INTENT_DAYS_KEPT = 14


def profile_id(project_id: str, user_id: str) -> str:
    return f"{project_id}/{user_id}"


def new_profile(project_id: str, user_id: str) -> Profile:
    return {
        "_id": profile_id(project_id, user_id),
        "project_id": project_id,
        "user_id": user_id,
        "version": 0,
        "traits": {},
        "trait_times": {},
        "event_count": 0,
        "events": {},
        "counters": {},
        "intents": {},
        "audiences": [],
        "seen": [],
        "outbox": [],
    }


def _insert_desc(recent: list[datetime], at: datetime, horizon: datetime) -> None:
    """Insert keeping newest-first order, drop what is older than the horizon or past the cap."""
    lo, hi = 0, len(recent)
    while lo < hi:
        mid = (lo + hi) // 2
        if recent[mid] >= at:
            lo = mid + 1
        else:
            hi = mid
    recent.insert(lo, at)
    while recent and (len(recent) > RECENT_KEPT or recent[-1] < horizon):
        recent.pop()


def _bump(slot: Profile, at: datetime, horizon: datetime) -> None:
    slot["count"] = slot.get("count", 0) + 1
    if slot.get("last_at") is None or at > slot["last_at"]:
        slot["last_at"] = at
    recent = slot.setdefault("recent", [])
    _insert_desc(recent, at, horizon)


def prune(profile: Profile, now: datetime, retention: timedelta) -> None:
    """Drop recent times past the retention window, so documents stay bounded."""
    horizon = now - retention
    for group in ("events", "counters"):
        for slot in profile.get(group, {}).values():
            slot["recent"] = [at for at in slot.get("recent", []) if at >= horizon]


def fold(
    profile: Profile,
    event: UserEventBase,
    counters: Iterable[CounterSpec],
    retention: timedelta,
    now: datetime,
) -> set[str]:
    """Apply one event; return what it changed ("trait:x", "event:y", ...), empty if a duplicate."""
    seen: list[str] = profile.setdefault("seen", [])
    if event.event_id in seen:
        return set()
    seen.append(event.event_id)
    del seen[:-SEEN_IDS_KEPT]
    at = event.timestamp
    horizon = now - retention
    changed: set[str] = set()
    if isinstance(event, TraitsIdentified):
        changed |= _fold_traits(profile, event.traits, at)
    elif isinstance(event, EventTracked):
        profile["event_count"] = profile.get("event_count", 0) + 1
        if profile.get("first_seen") is None or at < profile["first_seen"]:
            profile["first_seen"] = at
        if profile.get("last_seen") is None or at > profile["last_seen"]:
            profile["last_seen"] = at
        _bump(profile.setdefault("events", {}).setdefault(encode_key(event.event), {}), at, horizon)
        changed |= {f"event:{event.event}", "derived:activity"}
        for spec in counters:
            if spec.matches(event.event, event.properties, at):
                _bump(profile.setdefault("counters", {}).setdefault(spec.key, {}), at, horizon)
                changed.add(f"counter:{spec.key}")
    elif isinstance(event, IntentSignalled):
        entries = profile.setdefault("intents", {}).setdefault(encode_key(event.topic), [])
        entries.append({"at": at, "score": event.score})
        intent_horizon = now - timedelta(days=INTENT_DAYS_KEPT)
        entries[:] = [e for e in entries if e["at"] >= intent_horizon]
        changed.add(f"intent:{event.topic}")
    return changed


def _fold_traits(profile: Profile, traits: Mapping[str, Any], at: datetime) -> set[str]:
    """Merge top-level traits; an identify older than the last one to set a trait loses to it."""
    current: dict[str, Any] = profile.setdefault("traits", {})
    times: dict[str, datetime] = profile.setdefault("trait_times", {})
    changed: set[str] = set()
    for name, value in traits.items():
        key = encode_key(name)
        previous_at = times.get(key)
        if previous_at is not None and at < previous_at:
            continue
        times[key] = at
        coerced = coerce_trait_value(value)
        if current.get(name) != coerced:
            current[name] = coerced
            changed.add(f"trait:{name}")
    return changed
