"""Render a canonical rule back to a criteria string that parses to the same rule."""

from __future__ import annotations

import json
import re
from datetime import datetime

from audience_shared.rules.criteria import KEYWORDS
from audience_shared.rules.durations import duration_words
from audience_shared.rules.errors import RuleError
from audience_shared.rules.model import (
    AbsoluteWindow,
    AudienceCondition,
    Condition,
    CountClause,
    CountOperator,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)
from audience_shared.rules.values import Scalar

# Bare (unquoted) forms are deliberately narrower than what the grammar accepts, so a rendered
# token can never be read as a keyword, a number or a date.
_BARE_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.:\-/][A-Za-z0-9_]+)*")
_BARE_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEADING_WORD = re.compile(r"[A-Za-z0-9_]+")

_SYMBOLS = {
    TraitOperator.IS: "=",
    TraitOperator.IS_NOT: "!=",
    TraitOperator.GT: ">",
    TraitOperator.GTE: ">=",
    TraitOperator.LT: "<",
    TraitOperator.LTE: "<=",
}
_WORDS = {
    TraitOperator.CONTAINS: "contains",
    TraitOperator.NOT_CONTAINS: "does not contain",
    TraitOperator.STARTS_WITH: "starts with",
    TraitOperator.ENDS_WITH: "ends with",
    TraitOperator.BEFORE: "before",
    TraitOperator.AFTER: "after",
}
_COUNT_WORDS = {
    CountOperator.GTE: "at least",
    CountOperator.GT: "more than",
    CountOperator.LTE: "at most",
    CountOperator.LT: "fewer than",
    CountOperator.EQ: "exactly",
}


def render_criteria(rule: Group) -> str:
    """The criteria string for `rule`; `parse_criteria(render_criteria(r)) == r` for valid rules."""
    if not rule.rules:
        if rule.match != "all" or rule.negate:
            raise RuleError("invalid_rule", "an empty rule must be a plain 'all' group (everyone)")
        return "Users"
    body = _join(rule)
    if rule.negate:
        return f"Users NOT ({body})"
    return f"Users {_lead(rule.rules[0])}{body}"


def render_node(node: Group | Condition) -> str:
    """One group or condition as criteria text without the leading `Users` (used by explain)."""
    if isinstance(node, Group):
        return _child(node)
    return _condition(node)


def _lead(first: Group | Condition) -> str:
    if isinstance(first, TraitCondition | IntentCondition):
        return "with "
    return ""


def _join(group: Group) -> str:
    if not group.rules:
        raise RuleError("invalid_rule", "a nested group needs at least one rule")
    separator = " AND " if group.match == "all" else " OR "
    return separator.join(_child(child) for child in group.rules)


def _child(node: Group | Condition) -> str:
    if isinstance(node, Group):
        return f"NOT ({_join(node)})" if node.negate else f"({_join(node)})"
    return _condition(node)


def _condition(condition: Condition) -> str:
    if isinstance(condition, TraitCondition):
        return trait_text(condition)
    if isinstance(condition, EventCondition):
        return _event(condition)
    if isinstance(condition, IntentCondition):
        return _intent(condition)
    return _audience(condition)


def _is_keyword_led(text: str) -> bool:
    leading = _LEADING_WORD.match(text)
    return leading is not None and leading.group(0).lower() in KEYWORDS


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def render_field(field: str) -> str:
    if _BARE_FIELD.fullmatch(field) and not _is_keyword_led(field):
        return field
    return f"`{field}`"


def render_name(name: str) -> str:
    if _BARE_NAME.fullmatch(name) and not _is_keyword_led(name):
        return name
    return _quoted(name)


def _datetime(moment: datetime) -> str:
    date = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return date
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if moment.microsecond:
        clock += f".{moment.microsecond // 1000:03d}"
    return f"{date}T{clock}Z"


def render_value(value: Scalar) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return _datetime(value)
    if _BARE_VALUE.fullmatch(value) and not _is_keyword_led(value):
        return value
    return _quoted(value)


def trait_text(condition: TraitCondition) -> str:
    field = render_field(condition.field)
    operator = condition.operator
    value = condition.value
    op = TraitOperator
    if operator in (op.EXISTS, op.NOT_EXISTS):
        return f"{field} exists" if operator == op.EXISTS else f"{field} does not exist"
    if operator in (op.WITHIN_LAST, op.NOT_WITHIN_LAST):
        assert isinstance(value, str)
        negation = "not " if operator == op.NOT_WITHIN_LAST else ""
        return f"{field} {negation}within {duration_words(value)}"
    if operator in (op.IN, op.NOT_IN):
        assert isinstance(value, list)
        items = ", ".join(render_value(item) for item in value)
        return f"{field} {'in' if operator == op.IN else 'not in'} ({items})"
    if operator == op.BETWEEN:
        assert isinstance(value, list)
        return f"{field} between {render_value(value[0])} and {render_value(value[1])}"
    assert value is not None
    assert not isinstance(value, list)
    if operator in _SYMBOLS:
        return f"{field} {_SYMBOLS[operator]} {render_value(value)}"
    return f"{field} {_WORDS[operator]} {render_value(value)}"


def _count(count: CountClause) -> str:
    times = "time" if count.value == 1 else "times"
    return f"{_COUNT_WORDS[count.operator]} {count.value} {times}"


def _event(condition: EventCondition) -> str:
    verb = "who performed" if condition.performed else "who did not perform"
    parts = [f"{verb} {render_name(condition.event)}"]
    if condition.where:
        parts.append("where (" + " AND ".join(trait_text(item) for item in condition.where) + ")")
    if condition.count is not None:
        parts.append(_count(condition.count))
    if isinstance(condition.window, RelativeWindow):
        parts.append(f"in the last {duration_words(condition.window.last)}")
    elif isinstance(condition.window, AbsoluteWindow):
        parts.append(
            f"between {_datetime(condition.window.from_)} and {_datetime(condition.window.to)}"
        )
    return " ".join(parts)


def _intent(condition: IntentCondition) -> str:
    if len(condition.topics) == 1:
        topics = render_name(condition.topics[0])
    else:
        topics = "in (" + ", ".join(render_name(topic) for topic in condition.topics) + ")"
    lookback = duration_words(f"{condition.days}d")
    return f"intent {topics} score >= {condition.min_score!r} in the last {lookback}"


def _audience(condition: AudienceCondition) -> str:
    parts = ["in audience" if condition.member else "not in audience"]
    if condition.audience_name is not None:
        parts.append(_quoted(condition.audience_name))
    if condition.audience_id is not None:
        parts.append(f"id {render_name(condition.audience_id)}")
    return " ".join(parts)
