"""The reference evaluator, walking the rule tree on every call: benchmark baseline and explain."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from audience_shared.profile import (
    INTENT_MAX_ENTRIES,
    encode_key,
    find_values,
    resolve_field,
)
from audience_shared.rules.counters import counter_key, uses_counter
from audience_shared.rules.durations import parse_duration
from audience_shared.rules.model import (
    AbsoluteWindow,
    AudienceCondition,
    Condition,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)
from audience_shared.rules.predicate import TICK, Evaluation, count_thresholds, normalize_now
from audience_shared.rules.render import render_criteria, render_node
from audience_shared.rules.values import (
    is_number,
    latest_datetime,
    value_compare,
    value_contains,
    value_ends_with,
    value_is,
    value_starts_with,
)

# It re-reads the model, re-resolves field paths and re-dispatches operators each time, using the
# plain semantic functions of values.py. The compiled predicate and the MongoDB compiler are
# tested to agree with it.

Profile = Mapping[str, Any]
Outcome = tuple[bool, datetime | None]


def evaluate_naive(rule: Group, profile: Profile, now: datetime) -> Evaluation:
    """Evaluate by walking the tree; same answer and next change as `compile_predicate`."""
    matched, next_change_at = _node(rule, profile, normalize_now(now))
    return Evaluation(matched, next_change_at)


def combine(match: str, outcomes: list[Outcome]) -> Outcome:
    """AND/OR of child outcomes with the earliest instant the result can change (see predicate)."""
    if match == "all":
        if all(matched for matched, _ in outcomes):
            changes = [change for _, change in outcomes if change is not None]
            return True, min(changes) if changes else None
        false_changes = [change for matched, change in outcomes if not matched]
        if any(change is None for change in false_changes):
            return False, None
        return False, max(change for change in false_changes if change is not None)
    if not any(matched for matched, _ in outcomes):
        changes = [change for _, change in outcomes if change is not None]
        return False, min(changes) if changes else None
    true_changes = [change for matched, change in outcomes if matched]
    if any(change is None for change in true_changes):
        return True, None
    return True, max(change for change in true_changes if change is not None)


def _node(node: Group | Condition, profile: Profile, now: datetime) -> Outcome:
    if isinstance(node, Group):
        matched, change = combine(node.match, [_node(child, profile, now) for child in node.rules])
        return (not matched if node.negate else matched), change
    if isinstance(node, TraitCondition):
        return _trait(node, profile, now)
    if isinstance(node, EventCondition):
        return _event(node, profile, now)
    if isinstance(node, IntentCondition):
        return _intent(node, profile, now)
    return _audience(node, profile), None


def observed_values(
    condition: TraitCondition, document: Profile, scope: str = "profile"
) -> list[Any]:
    """Every value the condition's field resolves to (last_active falls back to last_seen)."""
    ref = resolve_field(condition.field, "properties" if scope == "properties" else "profile")
    found = find_values(document, ref.path)
    if ref.fallback is not None and not any(value is not None for value in found):
        found = find_values(document, ref.fallback)
    return found


def _trait(
    condition: TraitCondition, document: Profile, now: datetime, scope: str = "profile"
) -> Outcome:
    found = observed_values(condition, document, scope)
    op = TraitOperator
    operator = condition.operator
    value: Any = condition.value
    if operator in (op.WITHIN_LAST, op.NOT_WITHIN_LAST):
        window = parse_duration(value)
        moments = [moment for moment in map(latest_datetime, found) if moment is not None]
        latest = max(moments) if moments else None
        within = latest is not None and latest >= now - window
        change = latest + window + TICK if within and latest is not None else None
        return (within if operator == op.WITHIN_LAST else not within), change
    if operator == op.EXISTS:
        return any(item is not None for item in found), None
    if operator == op.NOT_EXISTS:
        return not any(item is not None for item in found), None
    if operator == op.IS:
        return any(value_is(item, value) for item in found), None
    if operator == op.IS_NOT:
        return not any(value_is(item, value) for item in found), None
    if operator == op.IN:
        return any(value_is(item, option) for item in found for option in value), None
    if operator == op.NOT_IN:
        return not any(value_is(item, option) for item in found for option in value), None
    if operator == op.CONTAINS:
        return any(value_contains(item, value) for item in found), None
    if operator == op.NOT_CONTAINS:
        return not any(value_contains(item, value) for item in found), None
    if operator == op.STARTS_WITH:
        return any(value_starts_with(item, value) for item in found), None
    if operator == op.ENDS_WITH:
        return any(value_ends_with(item, value) for item in found), None
    if operator == op.BETWEEN:
        low, high = value
        return any(
            value_compare(item, "gte", low) and value_compare(item, "lte", high) for item in found
        ), None
    comparison = {
        op.GT: "gt",
        op.GTE: "gte",
        op.LT: "lt",
        op.LTE: "lte",
        op.AFTER: "gt",
        op.BEFORE: "lt",
    }[operator]
    return any(value_compare(item, comparison, value) for item in found), None  # type: ignore[arg-type]


def matches_properties(where: list[TraitCondition], properties: Profile) -> bool:
    """Event property filters, the naive way."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return all(_trait(item, properties, epoch, "properties")[0] for item in where)


def event_entry(condition: EventCondition, profile: Profile) -> tuple[str, Any]:
    """Where the condition's numbers live (`events.<name>` or `counters.<key>`) and the entry."""
    if uses_counter(condition):
        container, key = "counters", counter_key(condition)
    else:
        container, key = "events", encode_key(condition.event)
    entries = profile.get(container)
    entry = entries.get(key) if isinstance(entries, dict) else None
    return f"{container}.{key}", entry


def _at_least(entry: Any, threshold: int, window: timedelta | None, now: datetime) -> Outcome:
    if threshold <= 0:
        return True, None
    if not isinstance(entry, dict):
        return False, None
    if window is None:
        count = entry.get("count")
        return is_number(count) and count >= threshold, None
    recent = entry.get("recent")
    if not isinstance(recent, list) or len(recent) < threshold:
        return False, None
    moment = recent[threshold - 1]
    if isinstance(moment, datetime) and moment.tzinfo is not None and moment >= now - window:
        return True, moment + window + TICK
    return False, None


def _event(condition: EventCondition, profile: Profile, now: datetime) -> Outcome:
    _, entry = event_entry(condition, profile)
    window = (
        parse_duration(condition.window.last)
        if isinstance(condition.window, RelativeWindow)
        else None
    )
    count = condition.count
    low, high = count_thresholds(count.operator, count.value) if count else (1, None)
    parts: list[Outcome] = []
    if low is not None:
        parts.append(_at_least(entry, low, window, now))
    if high is not None:
        reached, change = _at_least(entry, high, window, now)
        parts.append((not reached, change))
    matched, change = parts[0] if len(parts) == 1 else combine("all", parts)
    return (matched if condition.performed else not matched), change


def _intent_signals(
    condition: IntentCondition, profile: Profile, now: datetime
) -> list[dict[str, Any]]:
    since = now - timedelta(days=condition.days)
    intents = profile.get("intents")
    if not isinstance(intents, dict):
        return []
    signals = []
    for topic in condition.topics:
        entries = intents.get(encode_key(topic))
        if not isinstance(entries, list):
            continue
        for entry in entries[:INTENT_MAX_ENTRIES]:
            if not isinstance(entry, dict):
                continue
            at, score = entry.get("at"), entry.get("score")
            if (
                isinstance(at, datetime)
                and at.tzinfo is not None
                and at >= since
                and is_number(score)
                and score >= condition.min_score
            ):
                signals.append({"topic": topic, "at": at, "score": score})
    return signals


def _intent(condition: IntentCondition, profile: Profile, now: datetime) -> Outcome:
    signals = _intent_signals(condition, profile, now)
    if not signals:
        return False, None
    latest = max(signal["at"] for signal in signals)
    return True, latest + timedelta(days=condition.days) + TICK


def _audience(condition: AudienceCondition, profile: Profile) -> bool:
    audiences = profile.get("audiences")
    if isinstance(audiences, list):
        member = condition.audience_id in audiences
    else:
        member = audiences == condition.audience_id
    return member if condition.member else not member


# ---------------------------------------------------------------------------------------------
# explain


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def explain(rule: Group, profile: Profile, now: datetime) -> dict[str, Any]:
    """Why a profile does or does not match: the rule tree with each node's outcome.

    Every node has `outcome`, `next_change_at` and `criteria` (its text); conditions add
    `observed`, the profile data they looked at. Values are JSON-safe (date-times as ISO text).
    """
    explained = _explain(rule, profile, normalize_now(now))
    explained["criteria"] = render_criteria(rule)
    return explained


def _explain(node: Group | Condition, profile: Profile, now: datetime) -> dict[str, Any]:
    outcome, change = _node(node, profile, now)
    text = render_node(node) if not (isinstance(node, Group) and not node.rules) else "everyone"
    explained: dict[str, Any] = {
        "type": "group" if isinstance(node, Group) else node.type,
        "criteria": text,
        "outcome": outcome,
        "next_change_at": _json_safe(change),
    }
    if isinstance(node, Group):
        explained["match"] = node.match
        explained["negate"] = node.negate
        explained["rules"] = [_explain(child, profile, now) for child in node.rules]
        return explained
    if isinstance(node, TraitCondition):
        found = observed_values(node, profile)
        explained.update(
            field=node.field,
            operator=str(node.operator),
            value=_json_safe(node.value),
            observed=_json_safe(found[0] if len(found) == 1 else found if found else None),
        )
    elif isinstance(node, EventCondition):
        explained.update(event=node.event, observed=_observed_event(node, profile, now))
    elif isinstance(node, IntentCondition):
        signals = _intent_signals(node, profile, now)
        explained.update(
            topics=node.topics,
            observed={
                "signals": len(signals),
                "latest_at": _json_safe(max((s["at"] for s in signals), default=None)),
                "best_score": max((s["score"] for s in signals), default=None),
            },
        )
    else:
        audiences = profile.get("audiences")
        explained.update(
            audience_id=node.audience_id,
            audience_name=node.audience_name,
            observed={"member": isinstance(audiences, list) and node.audience_id in audiences},
        )
    return explained


def _observed_event(condition: EventCondition, profile: Profile, now: datetime) -> dict[str, Any]:
    source, entry = event_entry(condition, profile)
    observed: dict[str, Any] = {"source": source}
    if not isinstance(entry, dict):
        observed["count"] = 0
        return observed
    if isinstance(condition.window, RelativeWindow):
        since = now - parse_duration(condition.window.last)
        recent = entry.get("recent")
        observed["since"] = _json_safe(since)
        observed["count"] = sum(
            1
            for moment in (recent if isinstance(recent, list) else [])
            if isinstance(moment, datetime) and moment >= since
        )
    else:
        observed["count"] = entry.get("count", 0)
        if isinstance(condition.window, AbsoluteWindow):
            observed["window"] = _json_safe(
                {"from": condition.window.from_, "to": condition.window.to}
            )
    if "last_at" in entry:
        observed["last_at"] = _json_safe(entry["last_at"])
    return observed
