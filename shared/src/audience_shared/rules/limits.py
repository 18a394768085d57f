"""Limits every stored rule obeys (depth, size, windows, counts), checked by `validate_rule`."""

from __future__ import annotations

from datetime import timedelta

from audience_shared.profile import RECENT_LIMIT, RETENTION
from audience_shared.rules.durations import parse_duration
from audience_shared.rules.errors import RuleError
from audience_shared.rules.model import (
    CountClause,
    CountOperator,
    EventCondition,
    Group,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)

MAX_DEPTH = 10
MAX_CONDITIONS = 200
MAX_WINDOW: timedelta = RETENTION
# A windowed count reads `recent[K-1]`; "more than", "at most" and "exactly" read one further.
MAX_WINDOWED_INDEX = RECENT_LIMIT


def windowed_count_index(count: CountClause | None) -> int:
    """The highest `recent` position (1-based) a windowed count needs to read."""
    if count is None:
        return 1
    if count.operator in (CountOperator.GTE, CountOperator.LT):
        return count.value
    return count.value + 1


def validate_rule(rule: Group) -> None:
    """Raise RuleError unless `rule` is within every limit the executors rely on.

    Depth counts groups (the root is depth 1); the condition count includes event `where`
    filters. Windows are at most 365 days and windowed counts need at most the 1000 newest
    timestamps, which is what profiles keep.
    """
    if not rule.rules and (rule.match != "all" or rule.negate):
        raise RuleError("invalid_rule", "an empty rule must be a plain 'all' group (everyone)")
    conditions = 0
    stack: list[tuple[Group, int, str]] = [(rule, 1, "rule")]
    while stack:
        group, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise RuleError(
                "rule_too_deep",
                f"rules nest at most {MAX_DEPTH} groups deep",
                details={"path": where, "limit": MAX_DEPTH},
            )
        if not group.rules and group is not rule:
            raise RuleError(
                "invalid_rule", "a nested group needs at least one rule", details={"path": where}
            )
        for index, child in enumerate(group.rules):
            path = f"{where}.rules[{index}]"
            if isinstance(child, Group):
                stack.append((child, depth + 1, path))
                continue
            conditions += 1
            if isinstance(child, TraitCondition):
                _check_trait(child, path)
            elif isinstance(child, EventCondition):
                conditions += len(child.where)
                _check_event(child, path)
        if conditions > MAX_CONDITIONS:
            raise RuleError(
                "too_many_conditions",
                f"a rule has at most {MAX_CONDITIONS} conditions",
                details={"limit": MAX_CONDITIONS},
            )


def _check_window(duration: str, path: str) -> None:
    if parse_duration(duration) > MAX_WINDOW:
        raise RuleError(
            "window_too_long",
            f"time windows are at most {MAX_WINDOW.days} days",
            details={"path": path, "limit_days": MAX_WINDOW.days},
        )


def _check_trait(condition: TraitCondition, path: str) -> None:
    if condition.operator in (TraitOperator.WITHIN_LAST, TraitOperator.NOT_WITHIN_LAST):
        assert isinstance(condition.value, str)
        _check_window(condition.value, path)


def _check_event(condition: EventCondition, path: str) -> None:
    if isinstance(condition.window, RelativeWindow):
        _check_window(condition.window.last, path)
        if windowed_count_index(condition.count) > MAX_WINDOWED_INDEX:
            raise RuleError(
                "count_too_large",
                "a count within a relative window goes up to 1000 ('at least'/'fewer than') "
                "or 999 ('more than'/'at most'/'exactly')",
                details={"path": path, "limit": MAX_WINDOWED_INDEX},
            )
    for index, item in enumerate(condition.where):
        where_path = f"{path}.where[{index}]"
        if item.operator in (TraitOperator.WITHIN_LAST, TraitOperator.NOT_WITHIN_LAST):
            raise RuleError(
                "invalid_rule",
                "event property filters cannot use within_last; use the event window",
                details={"path": where_path},
            )
        if any(segment.isdigit() or not segment for segment in item.field.split(".")):
            raise RuleError(
                "invalid_rule",
                f"property path {item.field!r} has an empty or numeric segment",
                details={"path": where_path},
            )
