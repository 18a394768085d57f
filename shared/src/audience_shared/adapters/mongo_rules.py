"""Compile a rule to a MongoDB find() filter over the profiles collection (FerretDB v1 safe)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from audience_shared.profile import INTENT_MAX_ENTRIES, FieldRef, encode_key, resolve_field
from audience_shared.rules.counters import counter_key, uses_counter
from audience_shared.rules.durations import parse_duration
from audience_shared.rules.errors import RuleError
from audience_shared.rules.model import (
    AudienceCondition,
    Condition,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)
from audience_shared.rules.predicate import count_thresholds, normalize_now

# Only plain find operators are used ($and/$or/$nor/$eq/$gt/$gte/$lt/$lte/$in/$regex/$type/
# $elemMatch with operators only, and dot paths with array indices): no $expr, no aggregation.
# Every leaf is compiled in its positive form and negated with a top-level $nor, never with
# field-level $ne/$nin/$not: on paths that cross arrays FerretDB applies those per found value,
# while the rule (and MongoDB) mean "no value matches". The semantics are those of
# audience_shared.rules.predicate; tests/integration/test_rule_executors_agree.py checks it.

Filter = dict[str, Any]

MATCH_ALL: Filter = {}
MATCH_NONE: Filter = {"$nor": [{}]}

# Every BSON type a profile value can have except null: "has a value" in one $type test.
_NON_NULL_TYPES = ["string", "number", "bool", "date", "object", "array"]

_COMPARISONS = {
    TraitOperator.GT: "$gt",
    TraitOperator.GTE: "$gte",
    TraitOperator.LT: "$lt",
    TraitOperator.LTE: "$lte",
    TraitOperator.AFTER: "$gt",
    TraitOperator.BEFORE: "$lt",
}
_NEGATED = {
    TraitOperator.IS_NOT: TraitOperator.IS,
    TraitOperator.NOT_IN: TraitOperator.IN,
    TraitOperator.NOT_CONTAINS: TraitOperator.CONTAINS,
    TraitOperator.NOT_EXISTS: TraitOperator.EXISTS,
    TraitOperator.NOT_WITHIN_LAST: TraitOperator.WITHIN_LAST,
}


def compile_mongo_filter(rule: Group, now: datetime) -> Filter:
    """A find() filter selecting the profiles `rule` matches at `now` (caller adds project_id)."""
    compiled = _group(rule, normalize_now(now))
    # The folded constants are shared objects; hand out copies the caller may extend.
    if compiled is MATCH_ALL:
        return {}
    if compiled is MATCH_NONE:
        return {"$nor": [{}]}
    return compiled


def regex_literal(text: str) -> str:
    """`text` as a regex matching itself, in the syntax PCRE (MongoDB) and RE2 (FerretDB) share."""
    escaped = []
    for char in text:
        if char.isascii() and not char.isalnum():
            escaped.append(f"\\x{ord(char):02x}" if ord(char) < 0x20 else "\\" + char)
        else:
            escaped.append(char)
    return "".join(escaped)


def all_of(filters: list[Filter]) -> Filter:
    if any(item is MATCH_NONE for item in filters):
        return MATCH_NONE
    kept = [item for item in filters if item is not MATCH_ALL]
    if not kept:
        return MATCH_ALL
    return kept[0] if len(kept) == 1 else {"$and": kept}


def any_of(filters: list[Filter]) -> Filter:
    if any(item is MATCH_ALL for item in filters):
        return MATCH_ALL
    kept = [item for item in filters if item is not MATCH_NONE]
    if not kept:
        return MATCH_NONE
    return kept[0] if len(kept) == 1 else {"$or": kept}


def none_of(item: Filter) -> Filter:
    if item is MATCH_ALL:
        return MATCH_NONE
    if item is MATCH_NONE:
        return MATCH_ALL
    if list(item) == ["$nor"] and len(item["$nor"]) == 1:
        inner: Filter = item["$nor"][0]
        return inner
    return {"$nor": [item]}


def _group(group: Group, now: datetime) -> Filter:
    children = [_node(child, now) for child in group.rules]
    combined = any_of(children) if group.match == "any" else all_of(children)
    return none_of(combined) if group.negate else combined


def _node(node: Group | Condition, now: datetime) -> Filter:
    if isinstance(node, Group):
        return _group(node, now)
    if isinstance(node, TraitCondition):
        return _trait(node, now)
    if isinstance(node, EventCondition):
        return _event(node, now)
    if isinstance(node, IntentCondition):
        return _intent(node, now)
    return _audience(node)


def _positive(path: str, operator: TraitOperator, value: Any, now: datetime) -> Filter:
    op = TraitOperator
    if operator == op.IS:
        return {path: {"$eq": value}}
    if operator == op.IN:
        return {path: {"$in": list(value)}}
    if operator in _COMPARISONS:
        return {path: {_COMPARISONS[operator]: value}}
    if operator == op.BETWEEN:
        # Both bounds on the same found value; on an array, MongoDB's own range semantics.
        return {path: {"$gte": value[0], "$lte": value[1]}}
    if operator == op.WITHIN_LAST:
        return {path: {"$gte": now - parse_duration(value)}}
    if operator == op.EXISTS:
        return {path: {"$type": _NON_NULL_TYPES}}
    if operator == op.STARTS_WITH:
        return {path: {"$regex": "\\A" + regex_literal(value)}}
    if operator == op.ENDS_WITH:
        return {path: {"$regex": regex_literal(value) + "\\z"}}
    if operator == op.CONTAINS:
        # An element of an array; $elemMatch never matches a non-array.
        element: Filter = {path: {"$elemMatch": {"$eq": value}}}
        if not isinstance(value, str):
            return element
        # A substring of a string; the $type guard keeps $regex off arrays of strings, where
        # MongoDB would match a substring of an element.
        substring: Filter = {path: {"$regex": regex_literal(value), "$not": {"$type": "array"}}}
        return {"$or": [substring, element]}
    raise AssertionError(f"no MongoDB form for {operator}")


def _resolved(ref: FieldRef, operator: TraitOperator, value: Any, now: datetime) -> Filter:
    primary = _positive(ref.mongo_path, operator, value, now)
    fallback_path = ref.mongo_fallback
    if fallback_path is None:
        return primary
    # last_active: the trait when it has a value, else last_seen.
    present = _positive(ref.mongo_path, TraitOperator.EXISTS, None, now)
    fallback = _positive(fallback_path, operator, value, now)
    return any_of([all_of([present, primary]), all_of([none_of(present), fallback])])


def _trait(condition: TraitCondition, now: datetime) -> Filter:
    ref = resolve_field(condition.field)
    operator = condition.operator
    if operator in _NEGATED:
        return none_of(_resolved(ref, _NEGATED[operator], condition.value, now))
    return _resolved(ref, operator, condition.value, now)


def _event(condition: EventCondition, now: datetime) -> Filter:
    if uses_counter(condition):
        base = f"counters.{counter_key(condition)}"
    else:
        base = f"events.{encode_key(condition.event)}"
    window = condition.window
    span = parse_duration(window.last) if isinstance(window, RelativeWindow) else None

    def at_least(threshold: int) -> Filter:
        if threshold <= 0:
            return MATCH_ALL
        if span is None:
            return {f"{base}.count": {"$gte": threshold}}
        # `recent` is newest first, so the threshold-th newest being in the window means at
        # least `threshold` events are.
        return {f"{base}.recent.{threshold - 1}": {"$gte": now - span}}

    count = condition.count
    low, high = count_thresholds(count.operator, count.value) if count else (1, None)
    parts: list[Filter] = []
    if low is not None:
        parts.append(at_least(low))
    if high is not None:
        parts.append(none_of(at_least(high)))
    combined = all_of(parts)
    return combined if condition.performed else none_of(combined)


def _intent(condition: IntentCondition, now: datetime) -> Filter:
    # FerretDB v1 cannot $elemMatch on sub-document fields, so each entry index is spelled out;
    # profiles keep at most INTENT_MAX_ENTRIES entries per topic (see profile.add_intent_signal).
    since = now - timedelta(days=condition.days)
    branches: list[Filter] = []
    for topic in condition.topics:
        base = f"intents.{encode_key(topic)}"
        branches.extend(
            {
                f"{base}.{index}.at": {"$gte": since},
                f"{base}.{index}.score": {"$gte": condition.min_score},
            }
            for index in range(INTENT_MAX_ENTRIES)
        )
    return any_of(branches)


def _audience(condition: AudienceCondition) -> Filter:
    if condition.audience_id is None:
        raise RuleError(
            "unresolved_audience",
            f"audience {condition.audience_name!r} must be resolved to an id before compiling",
            details={"audience_name": condition.audience_name},
        )
    member: Filter = {"audiences": {"$eq": condition.audience_id}}
    return member if condition.member else none_of(member)
