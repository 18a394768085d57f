"""Folding user events into profile documents, and merging profiles: pure functions, no I/O."""

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from audience_shared.datasets import DATASET_TRAIT
from audience_shared.events import (
    EventTracked,
    IntentSignalled,
    ListMembershipChanged,
    TraitsIdentified,
    UserEventBase,
    UsersAliased,
    anonymous_user_id,
)
from audience_shared.profile import (
    RETENTION,
    add_intent_signal,
    add_recent,
    coerce_trait_value,
    encode_key,
    to_utc_ms,
)
from audience_shared.rules import CounterSpec

Profile = dict[str, Any]

# Segment-style group calls set traits under groups.<group id> (see docs/segment.md).
GROUPS_TRAIT = "groups"

# Event ids remembered per user to drop redeliveries; a user's events share one partition, so a
# redelivery follows its original closely.
SEEN_IDS_KEPT = 500

# Tracked events kept with their properties (newest first, within RETENTION), so that a
# property-filtered condition added later also counts a user's past events: a new counter is
# rebuilt from this history. Bounded to keep profile writes cheap; a user with more events of the
# counted name than the history holds gets a counter marked `truncated`.
TRACKED_KEPT = 200
# Properties (as JSON) larger than this are not kept in the history: 200 of them stay far under
# a document's size limit. A counter rebuilt past such an event is marked `truncated`.
PROPERTIES_KEPT = 4096

# Marks that an event was new, so the profile is written even if nothing an audience reads moved.
NEW_EVENT = "new:event"

# Everything a profile change can touch, for audiences that must re-evaluate after a merge.
EVERYTHING = "*:*"


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
        "counted": [],
        "tracked": [],
        "intents": {},
        "lists": [],
        "list_times": {},
        "audiences": [],
        "joined": {},
        "seen": [],
        "outbox": [],
    }


def linked_profile_id(event: UserEventBase) -> str | None:
    """The profile an identify-with-anonymous-id or alias folds into this user's, if any."""
    if isinstance(event, TraitsIdentified) and event.anonymous_id:
        return profile_id(event.project_id, anonymous_user_id(event.anonymous_id))
    if isinstance(event, UsersAliased) and event.previous_id != event.user_id:
        return profile_id(event.project_id, event.previous_id)
    return None


def _bump(slot: Profile, at: datetime, now: datetime) -> None:
    slot["count"] = slot.get("count", 0) + 1
    if slot.get("last_at") is None or at > slot["last_at"]:
        slot["last_at"] = at
    slot["recent"] = add_recent(slot.get("recent", []), at, now)


def prune(profile: Profile, now: datetime) -> None:
    """Drop recent times past the retention window, so documents stay bounded."""
    horizon = now - RETENTION
    for group in ("events", "counters"):
        for slot in profile.get(group, {}).values():
            slot["recent"] = [at for at in slot.get("recent", []) if at >= horizon]
    if profile.get("tracked"):
        profile["tracked"] = [t for t in profile["tracked"] if t["at"] >= horizon]


def count_history(profile: Profile, counters: Iterable[CounterSpec], now: datetime) -> set[str]:
    """Make `counters` exactly the maintained counters, rebuilding new ones from the history.

    `counted` lists the counters this profile has counted every tracked event for. A counter
    the running audiences need but the profile has not counted is rebuilt from `tracked`; one no
    running audience needs is dropped (so if it comes back, it is rebuilt rather than trusted
    with a gap in it).
    """
    wanted = {spec.key: spec for spec in counters}
    if "counted" not in profile:
        # A profile from before counters were tracked: the counters it has were kept all along.
        profile["counted"] = list(profile.get("counters", {}))
    counted: list[str] = profile["counted"]
    slots: dict[str, Any] = profile.setdefault("counters", {})
    changed: set[str] = set()
    for key in [key for key in counted if key not in wanted]:
        counted.remove(key)
        slots.pop(key, None)
    for key, spec in wanted.items():
        if key in counted:
            continue
        counted.append(key)
        slot: Profile = {}
        seen_of_event = 0
        for entry in reversed(profile.get("tracked", [])):  # oldest first, like live folding
            if entry["e"] != spec.event:
                continue
            if entry["p"] is None:
                slot["truncated"] = True  # its properties were too large to keep
                continue
            seen_of_event += 1
            if spec.matches(entry["e"], json.loads(entry["p"]), entry["at"]):
                _bump(slot, entry["at"], now)
        all_time = profile.get("events", {}).get(encode_key(spec.event), {}).get("count", 0)
        if seen_of_event < all_time:
            slot["truncated"] = True
        if slot:
            slots[key] = slot
            changed.add(f"counter:{key}")
        else:
            slots.pop(key, None)
        changed.add(NEW_EVENT)  # the profile must be written to remember what it counted
    return changed


def _remember(profile: Profile, event: EventTracked, at: datetime, now: datetime) -> None:
    """Keep the event with its properties (as JSON: property names need no key encoding); the
    properties of a very large event are left out, so the history stays small."""
    properties = json.dumps(event.properties, default=str)
    kept = properties if len(properties) <= PROPERTIES_KEPT else None
    entry = {"e": event.event, "at": at, "p": kept}
    tracked = [entry, *profile.get("tracked", [])]
    tracked.sort(key=lambda t: t["at"], reverse=True)
    horizon = now - RETENTION
    profile["tracked"] = [t for t in tracked if t["at"] >= horizon][:TRACKED_KEPT]


def fold(
    profile: Profile, event: UserEventBase, counters: Iterable[CounterSpec], now: datetime
) -> set[str]:
    """Apply one event; return what it changed ("trait:x", "event:y", ...), empty if a duplicate."""
    seen: list[str] = profile.setdefault("seen", [])
    if event.event_id in seen:
        return set()
    seen.append(event.event_id)
    del seen[:-SEEN_IDS_KEPT]
    at = to_utc_ms(event.timestamp)
    # A new event always changes the profile (its id is remembered), even when no audience cares.
    changed: set[str] = {NEW_EVENT}
    if isinstance(event, TraitsIdentified):
        changed |= _fold_traits(profile, event.traits, at)
    elif isinstance(event, EventTracked):
        profile["event_count"] = profile.get("event_count", 0) + 1
        if profile.get("first_seen") is None or at < profile["first_seen"]:
            profile["first_seen"] = at
        if profile.get("last_seen") is None or at > profile["last_seen"]:
            profile["last_seen"] = at
        _bump(profile.setdefault("events", {}).setdefault(encode_key(event.event), {}), at, now)
        changed |= {f"event:{event.event}", "derived:activity"}
        _remember(profile, event, at, now)
        for spec in counters:
            if spec.matches(event.event, event.properties, at):
                _bump(profile.setdefault("counters", {}).setdefault(spec.key, {}), at, now)
                changed.add(f"counter:{spec.key}")
    elif isinstance(event, IntentSignalled):
        intents = profile.setdefault("intents", {})
        key = encode_key(event.topic)
        intents[key] = add_intent_signal(intents.get(key, []), at, event.score, now)
        changed.add(f"intent:{event.topic}")
    elif isinstance(event, ListMembershipChanged):
        changed |= _fold_list(profile, event, at)
    return changed


def _fold_traits(profile: Profile, traits: Mapping[str, Any], at: datetime) -> set[str]:
    """Merge top-level traits; an identify older than the last one to set a trait loses to it."""
    current: dict[str, Any] = profile.setdefault("traits", {})
    times: dict[str, datetime] = profile.setdefault("trait_times", {})
    changed: set[str] = set()
    for name, value in traits.items():
        if name == GROUPS_TRAIT and isinstance(value, dict):
            changed |= _fold_groups(current, times, value, at)
            continue
        if name == DATASET_TRAIT and isinstance(value, dict):
            changed |= _fold_datasets(current, times, value, at)
            continue
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


def _fold_groups(
    current: dict[str, Any], times: dict[str, datetime], groups: Mapping[str, Any], at: datetime
) -> set[str]:
    """A group call names one group: merge it by group id, so the user keeps its other groups."""
    held = current.get(GROUPS_TRAIT)
    merged: dict[str, Any] = dict(held) if isinstance(held, dict) else {}
    for group_id, group_traits in groups.items():
        key = encode_key(f"{GROUPS_TRAIT}.{group_id}")
        previous_at = times.get(key)
        if previous_at is not None and at < previous_at:
            continue
        times[key] = at
        merged[group_id] = coerce_trait_value(group_traits)
    if merged == held:
        return set()
    current[GROUPS_TRAIT] = merged
    return {f"trait:{GROUPS_TRAIT}"}


def _fold_datasets(
    current: dict[str, Any], times: dict[str, datetime], datasets: Mapping[str, Any], at: datetime
) -> set[str]:
    """A dataset row sets fields of one dataset: merge field by field, so a user keeps the other
    datasets' fields and this dataset's fields the row does not name (each field is its own
    trait, with its own time, as `dataset.<name>.<field>`)."""
    held = current.get(DATASET_TRAIT)
    merged: dict[str, Any] = (
        {
            name: dict(fields) if isinstance(fields, dict) else fields
            for name, fields in held.items()
        }
        if isinstance(held, dict)
        else {}
    )
    for name, fields in datasets.items():
        if not isinstance(fields, dict):
            continue  # not a row of fields: nothing to merge
        record = merged.get(name)
        record = record if isinstance(record, dict) else {}
        for field, value in fields.items():
            key = encode_key(f"{DATASET_TRAIT}.{name}.{field}")
            previous_at = times.get(key)
            if previous_at is not None and at < previous_at:
                continue
            times[key] = at
            record[field] = coerce_trait_value(value)
        merged[name] = record
    if merged == held:
        return set()
    current[DATASET_TRAIT] = merged
    return {f"trait:{DATASET_TRAIT}"}


def _fold_list(profile: Profile, event: ListMembershipChanged, at: datetime) -> set[str]:
    times: dict[str, datetime] = profile.setdefault("list_times", {})
    previous_at = times.get(event.audience_id)
    if previous_at is not None and at < previous_at:
        return set()  # a newer add or remove already decided this list
    times[event.audience_id] = at
    lists: list[str] = profile.setdefault("lists", [])
    if event.member and event.audience_id not in lists:
        lists.append(event.audience_id)
    elif not event.member and event.audience_id in lists:
        lists.remove(event.audience_id)
    else:
        return set()
    return {f"list:{event.audience_id}"}


def merge_into(target: Profile, source: Profile, now: datetime) -> set[str]:
    """Fold a linked (anonymous or aliased) profile into the user's, once; the source is spent.

    The user's own traits win over the source's, counters add up, activity times widen.
    """
    merged_from: list[str] = target.setdefault("merged_from", [])
    if source["_id"] in merged_from or source.get("merged_into"):
        return set()
    merged_from.append(source["_id"])
    traits: dict[str, Any] = target.setdefault("traits", {})
    for name, value in source.get("traits", {}).items():
        traits.setdefault(name, value)
    for name, at in source.get("trait_times", {}).items():
        target.setdefault("trait_times", {}).setdefault(name, at)
    target["event_count"] = target.get("event_count", 0) + source.get("event_count", 0)
    for field, pick in (("first_seen", min), ("last_seen", max)):
        values = [v for v in (target.get(field), source.get(field)) if v is not None]
        if values:
            target[field] = pick(values)
    for group in ("events", "counters"):
        slots: dict[str, Any] = target.setdefault(group, {})
        for key, slot in source.get(group, {}).items():
            mine = slots.setdefault(key, {"count": 0, "recent": []})
            mine["count"] = mine.get("count", 0) + slot.get("count", 0)
            lasts = [v for v in (mine.get("last_at"), slot.get("last_at")) if v is not None]
            mine["last_at"] = max(lasts) if lasts else None
            recent = list(mine.get("recent", []))
            for at in slot.get("recent", []):
                recent = add_recent(recent, at, now)
            mine["recent"] = recent
    intents: dict[str, Any] = target.setdefault("intents", {})
    for key, entries in source.get("intents", {}).items():
        for entry in entries:
            intents[key] = add_intent_signal(intents.get(key, []), entry["at"], entry["score"], now)
    # The merged history is both profiles' events; a counter only one side had counted is
    # rebuilt from it on the next evaluation.
    tracked = [*target.get("tracked", []), *source.get("tracked", [])]
    tracked.sort(key=lambda t: t["at"], reverse=True)
    target["tracked"] = tracked[:TRACKED_KEPT]
    theirs = set(source.get("counted", []))
    target["counted"] = [key for key in target.get("counted", []) if key in theirs]
    lists: list[str] = target.setdefault("lists", [])
    lists.extend(aud for aud in source.get("lists", []) if aud not in lists)
    seen: list[str] = target.setdefault("seen", [])
    seen.extend(source.get("seen", []))
    del seen[:-SEEN_IDS_KEPT]
    source["merged_into"] = target["_id"]
    return {EVERYTHING}
