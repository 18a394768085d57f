"""The profile document layout shared by the evaluator, the rule executors and MongoDB."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

# How long per-event timestamp lists are kept, and how many. Rule validation caps windows and
# windowed count thresholds at these, so a pruned list always answers every valid rule exactly.
RETENTION = timedelta(days=365)
RECENT_LIMIT = 1000

# Intent entries per topic: the lookback ceiling of an intent condition, and how many entries a
# topic keeps. The MongoDB compiler has to enumerate entry indices (FerretDB cannot $elemMatch
# on sub-documents), so the list is bounded; both executors read only the first entries.
INTENT_LOOKBACK = timedelta(days=14)
INTENT_MAX_ENTRIES = 32

# Fields the evaluator derives from tracked events; they shadow traits of the same name.
DERIVED_FIELDS = frozenset({"event_count", "first_seen", "last_seen", "last_active"})

_ENCODED = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_ENCODE_RE = re.compile(r"[%.$\x00]")

_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[Tt]\d{2}:\d{2}(?::\d{2}(?:[.,](\d{1,9}))?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?$"
)


def encode_key(name: str) -> str:
    """Make any event name or intent topic a safe MongoDB field name (percent-encodes % . $ NUL)."""
    return _ENCODE_RE.sub(lambda found: _ENCODED[found.group(0)], name)


def decode_key(key: str) -> str:
    """Invert `encode_key`."""
    return unquote(key, errors="strict")


def to_utc_ms(moment: datetime) -> datetime:
    """Aware UTC at millisecond precision, the precision BSON keeps; naive means UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def parse_iso_datetime(text: str) -> datetime | None:
    """An ISO-8601 date or date-time string as aware UTC (ms precision), else None."""
    if len(text) > 40:
        return None
    found = _ISO_DATETIME.match(text)
    if found is None:
        return None
    fraction = found.group(1)
    if fraction is not None and len(fraction) > 6:
        # fromisoformat stops at microseconds; the extra digits are below BSON precision anyway.
        text = text.replace(fraction, fraction[:6], 1)
    try:
        parsed = datetime.fromisoformat(text.replace(",", ".", 1))
        return to_utc_ms(parsed)
    except (ValueError, OverflowError):
        return None


def coerce_trait_value(value: Any) -> Any:
    """Normalize a trait (or rule) value the same way at ingestion and in rules.

    ISO date/date-time strings become aware UTC datetimes, datetimes become UTC at millisecond
    precision, NaN becomes None (it has no order in either executor), recursively in dicts and
    lists. Everything else is returned unchanged.
    """
    if isinstance(value, str):
        parsed = parse_iso_datetime(value)
        return value if parsed is None else parsed
    if isinstance(value, datetime):
        return to_utc_ms(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: coerce_trait_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [coerce_trait_value(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class FieldRef:
    """Where a rule field lives in the profile document.

    `path` is the document path; `fallback` (only `last_active`) is read when `path` holds no
    value. `event` names the tracked event of `events.<name>.count|last_at`.
    """

    field: str
    path: tuple[str, ...]
    fallback: tuple[str, ...] | None = None
    event: str | None = None

    @property
    def mongo_path(self) -> str:
        return ".".join(self.path)

    @property
    def mongo_fallback(self) -> str | None:
        return None if self.fallback is None else ".".join(self.fallback)


def derived_event_field(field: str) -> tuple[str, str] | None:
    """`events.<name>.count` → (name, "count"); also `last_at`; else None."""
    if not field.startswith("events."):
        return None
    for suffix in ("count", "last_at"):
        tail = "." + suffix
        if field.endswith(tail) and len(field) > len("events.") + len(tail):
            return field[len("events.") : -len(tail)], suffix
    return None


def resolve_field(field: str, scope: Literal["profile", "properties"] = "profile") -> FieldRef:
    """Map a rule field to its document path; derived names win over same-named traits.

    In the `properties` scope (event `where` filters) a field is a plain path into the event's
    properties and nothing is derived.
    """
    if scope == "properties":
        return FieldRef(field, tuple(field.split(".")))
    if field == "last_active":
        return FieldRef(field, ("traits", "last_active"), fallback=("last_seen",))
    if field in DERIVED_FIELDS:
        return FieldRef(field, (field,))
    event_field = derived_event_field(field)
    if event_field is not None:
        name, suffix = event_field
        return FieldRef(field, ("events", encode_key(name), suffix), event=name)
    return FieldRef(field, ("traits", *field.split(".")))


def find_values(document: Any, path: Sequence[str]) -> list[Any]:
    """Every value at `path`, descending into arrays of sub-documents like MongoDB does.

    Mirrors FerretDB's path lookup: a missing key contributes nothing, a null contributes None,
    and an array met before the last segment is searched for sub-documents holding the key.
    Trait paths never have numeric segments, so array indices never apply.
    """
    values: list[Any] = [document]
    for segment in path:
        found: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                if segment in value:
                    found.append(value[segment])
            elif isinstance(value, list):
                found.extend(
                    item[segment] for item in value if isinstance(item, dict) and segment in item
                )
        if not found:
            return found
        values = found
    return values


def add_recent(
    recent: Iterable[datetime],
    at: datetime,
    now: datetime,
    *,
    window: timedelta = RETENTION,
    limit: int = RECENT_LIMIT,
) -> list[datetime]:
    """A `recent` list with `at` added: newest first, within `window` of `now`, at most `limit`."""
    oldest = now - window
    merged = sorted(
        (moment for moment in (*recent, to_utc_ms(at)) if moment >= oldest), reverse=True
    )
    return merged[:limit]


def add_intent_signal(
    entries: Iterable[Mapping[str, Any]], at: datetime, score: float, now: datetime
) -> list[dict[str, Any]]:
    """The intent entries of one topic with a new signal added.

    Keeps entries within INTENT_LOOKBACK of `now`, newest first, and drops every entry another
    entry dominates (no earlier and no lower score): an intent condition asks "is there an entry
    at or after T with score at least S", which a dominated entry can never answer alone. The
    surviving list has strictly rising scores as it gets older, so it rarely grows long; it is
    capped at INTENT_MAX_ENTRIES.
    """
    oldest = now - INTENT_LOOKBACK
    candidates = [
        {"at": entry["at"], "score": entry["score"]}
        for entry in entries
        if isinstance(entry.get("at"), datetime) and entry["at"] >= oldest
    ]
    candidates.append({"at": to_utc_ms(at), "score": score})
    candidates.sort(key=lambda entry: (entry["at"], entry["score"]), reverse=True)
    kept: list[dict[str, Any]] = []
    best = -math.inf
    for entry in candidates:
        if entry["score"] > best:
            kept.append(entry)
            best = entry["score"]
    return kept[:INTENT_MAX_ENTRIES]


# When a profile's user joined each of its audiences: `joined_at`, a list in the order of
# `audiences` (None where unknown). Older versions kept a map, `joined` (audience id → time); a
# profile keeps it until its next write. This version writes the map only into a profile with
# no join times at all (adopting an older version's membership documents), so a profile with a
# map and a list was last written by an older version, which kept the list it did not know: the
# map wins. A list stores in half the bytes of a map on
# FerretDB, which keeps a type entry and the key list beside every value of a map.
JOIN_TIME_FIELDS = {"audiences": 1, "joined_at": 1, "joined": 1}


def stored_join_times(audiences: Sequence[str], joined: Mapping[str, datetime]) -> list[Any]:
    """The `joined_at` list of a profile's audiences, from the map of their join times."""
    return [joined.get(audience_id) for audience_id in audiences]


def join_times(doc: Mapping[str, Any]) -> dict[str, datetime]:
    """A stored profile's join time of each of its audiences, in either stored form."""
    times = doc.get("joined_at")
    if times is None or "joined" in doc:
        return dict(doc.get("joined") or {})
    return {
        audience_id: at
        for audience_id, at in zip(doc.get("audiences") or (), times, strict=False)
        if at is not None
    }


def join_time(doc: Mapping[str, Any], audience_id: str) -> datetime | None:
    """When a stored profile's user joined this audience, if known."""
    return join_times(doc).get(audience_id)
