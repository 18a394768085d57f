"""Compile a rule once into closures that evaluate a profile and say when the answer can change."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from audience_shared.profile import (
    INTENT_MAX_ENTRIES,
    FieldRef,
    encode_key,
    find_values,
    resolve_field,
)
from audience_shared.rules.counters import counter_key, uses_counter
from audience_shared.rules.durations import parse_duration
from audience_shared.rules.errors import RuleError
from audience_shared.rules.model import (
    AudienceCondition,
    Condition,
    CountOperator,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
)
from audience_shared.rules.values import Scalar, kind_of

# Every node becomes a test(profile, now) -> bool; nodes whose answer moves with the clock
# (within_last, relative event windows, intents) also get timed(profile, now) -> (matched,
# next_change_at). A group only takes the timed path when one of its children needs it, so
# time-independent rules never build tuples. The semantics are those of values.py and the
# MongoDB compiler; naive.py is the reference walk both are tested against.

Profile = Mapping[str, Any]
Test = Callable[[Profile, datetime], bool]
Timed = Callable[[Profile, datetime], tuple[bool, datetime | None]]
Check = Callable[[Any], bool]

# Everything is stored at millisecond precision, so the first instant a windowed answer differs
# is one millisecond after the last instant it still holds.
TICK = timedelta(milliseconds=1)


class Evaluation(NamedTuple):
    """A rule's answer for one profile at one instant.

    `next_change_at` is the earliest future instant the answer can change with no new event
    (None when it cannot); it may be early, never late.
    """

    matched: bool
    next_change_at: datetime | None


@dataclass(frozen=True, slots=True)
class Node:
    test: Test
    timed: Timed | None = None


def normalize_now(now: datetime) -> datetime:
    """The evaluation instant as aware UTC at millisecond precision, like stored timestamps."""
    if now.tzinfo is not UTC:
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    extra = now.microsecond % 1000
    return now.replace(microsecond=now.microsecond - extra) if extra else now


class CompiledRule:
    """A rule compiled for repeated evaluation; build once per rule version."""

    __slots__ = ("_test", "_timed", "rule")

    def __init__(self, rule: Group) -> None:
        self.rule = rule
        node = _compile_group(rule)
        self._test = node.test
        self._timed = node.timed

    @property
    def time_dependent(self) -> bool:
        return self._timed is not None

    def evaluate(self, profile: Profile, now: datetime) -> Evaluation:
        now = normalize_now(now)
        if self._timed is None:
            return Evaluation(self._test(profile, now), None)
        matched, next_change_at = self._timed(profile, now)
        return Evaluation(matched, next_change_at)

    def matches(self, profile: Profile, now: datetime) -> bool:
        """Only the answer, skipping next-change bookkeeping."""
        return self._test(profile, normalize_now(now))


def compile_predicate(rule: Group) -> CompiledRule:
    """Compile `rule`; raises RuleError(code="unresolved_audience") for audiences named only."""
    return CompiledRule(rule)


# ---------------------------------------------------------------------------------------------
# Groups and boolean combinators


_TRUE = Node(lambda profile, now: True)
_FALSE = Node(lambda profile, now: False)


def _compile_group(group: Group) -> Node:
    children = [_compile(child) for child in group.rules]
    node = _any(children) if group.match == "any" else _all(children)
    return _not(node) if group.negate else node


def _compile(node: Group | Condition) -> Node:
    if isinstance(node, Group):
        return _compile_group(node)
    if isinstance(node, TraitCondition):
        return compile_trait(node)
    if isinstance(node, EventCondition):
        return _compile_event(node)
    if isinstance(node, IntentCondition):
        return _compile_intent(node)
    return _compile_audience(node)


def _not(node: Node) -> Node:
    test = node.test

    def negated_test(profile: Profile, now: datetime) -> bool:
        return not test(profile, now)

    timed = node.timed
    if timed is None:
        return Node(negated_test)

    def negated_timed(profile: Profile, now: datetime) -> tuple[bool, datetime | None]:
        matched, next_change_at = timed(profile, now)
        return not matched, next_change_at

    return Node(negated_test, negated_timed)


def _static_all(tests: Sequence[Test]) -> Test:
    if not tests:
        return _TRUE.test
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda profile, now: first(profile, now) and second(profile, now)
    tests = tuple(tests)

    def all_test(profile: Profile, now: datetime) -> bool:
        # A plain loop: all() over a generator costs a frame per call on this hot path.
        for test in tests:  # noqa: SIM110
            if not test(profile, now):
                return False
        return True

    return all_test


def _static_any(tests: Sequence[Test]) -> Test:
    if not tests:
        return _FALSE.test
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda profile, now: first(profile, now) or second(profile, now)
    tests = tuple(tests)

    def any_test(profile: Profile, now: datetime) -> bool:
        for test in tests:  # noqa: SIM110
            if test(profile, now):
                return True
        return False

    return any_test


def _all(children: Sequence[Node]) -> Node:
    """AND. A false static child settles it for good; otherwise combine the timed children.

    True: the AND changes when the first child changes (min). False: it can only become true
    once every false child has changed, so the latest of their changes is a safe lower bound,
    and a false child that never changes means never.
    """
    test = _static_all([child.test for child in children])
    timed_children = tuple(child.timed for child in children if child.timed is not None)
    if not timed_children:
        return Node(test)
    static = _static_all([child.test for child in children if child.timed is None])

    def all_timed(profile: Profile, now: datetime) -> tuple[bool, datetime | None]:
        if not static(profile, now):
            return False, None
        matched = True
        earliest: datetime | None = None
        latest_false: datetime | None = None
        never = False
        for timed in timed_children:
            child_matched, change = timed(profile, now)
            if child_matched:
                if change is not None and (earliest is None or change < earliest):
                    earliest = change
            else:
                matched = False
                if change is None:
                    never = True
                elif latest_false is None or change > latest_false:
                    latest_false = change
        if matched:
            return True, earliest
        return False, None if never else latest_false

    return Node(test, all_timed)


def _any(children: Sequence[Node]) -> Node:
    """OR, the mirror image of `_all`."""
    test = _static_any([child.test for child in children])
    timed_children = tuple(child.timed for child in children if child.timed is not None)
    if not timed_children:
        return Node(test)
    static = _static_any([child.test for child in children if child.timed is None])

    def any_timed(profile: Profile, now: datetime) -> tuple[bool, datetime | None]:
        if static(profile, now):
            return True, None
        matched = False
        earliest: datetime | None = None
        latest_true: datetime | None = None
        never = False
        for timed in timed_children:
            child_matched, change = timed(profile, now)
            if child_matched:
                matched = True
                if change is None:
                    never = True
                elif latest_true is None or change > latest_true:
                    latest_true = change
            elif change is not None and (earliest is None or change < earliest):
                earliest = change
        if matched:
            return True, None if never else latest_true
        return False, earliest

    return Node(test, any_timed)


# ---------------------------------------------------------------------------------------------
# Field access


class _Missing:
    __slots__ = ()


MISSING: Any = _Missing()


class _Many:
    """Several values found on a path that crosses an array of sub-documents."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]) -> None:
        self.values = values


Resolver = Callable[[Profile], Any]


def _path_getter(path: tuple[str, ...]) -> Resolver:
    """The value at `path`: one value, MISSING, or a _Many when arrays of documents intervene."""

    def slow(profile: Profile) -> Any:
        # Only reached when an array sits mid-path: MongoDB looks into its sub-documents.
        found = find_values(profile, path)
        return _Many(found) if found else MISSING

    if len(path) == 1:
        (only,) = path
        return lambda profile: profile.get(only, MISSING)
    if len(path) == 2:
        first, second = path

        def get_two(profile: Profile) -> Any:
            inner = profile.get(first, MISSING)
            if isinstance(inner, dict):
                return inner.get(second, MISSING)
            if isinstance(inner, list):
                return slow(profile)
            return MISSING

        return get_two
    if len(path) == 3:
        first, second, third = path

        def get_three(profile: Profile) -> Any:
            inner = profile.get(first, MISSING)
            if isinstance(inner, dict):
                inner = inner.get(second, MISSING)
                if isinstance(inner, dict):
                    return inner.get(third, MISSING)
            if isinstance(inner, list):
                return slow(profile)
            return MISSING

        return get_three

    def get_many(profile: Profile) -> Any:
        inner: Any = profile
        for segment in path:
            if isinstance(inner, dict):
                inner = inner.get(segment, MISSING)
            elif isinstance(inner, list):
                return slow(profile)
            else:
                return MISSING
        return inner

    return get_many


def _exists_in(value: Any) -> bool:
    if value is MISSING:
        return False
    if type(value) is _Many:
        return any(item is not None for item in value.values)
    return value is not None


def field_resolver(ref: FieldRef) -> Resolver:
    """Resolve a field; `last_active` falls back to `last_seen` when the trait has no value."""
    primary = _path_getter(ref.path)
    if ref.fallback is None:
        return primary
    fallback = _path_getter(ref.fallback)

    def with_fallback(profile: Profile) -> Any:
        value = primary(profile)
        return value if _exists_in(value) else fallback(profile)

    return with_fallback


def _leaf(resolve: Resolver, check: Check) -> Test:
    def test(profile: Profile, now: datetime) -> bool:
        value = resolve(profile)
        if value is MISSING:
            return False
        if type(value) is _Many:
            return any(check(item) for item in value.values)
        return check(value)

    return test


# ---------------------------------------------------------------------------------------------
# Value checks: one closure per operator and value kind, built at compile time


def _scalar_equals(expected: Scalar) -> Check:
    kind = kind_of(expected)
    if kind == "string":
        return lambda value: value == expected and type(value) is str
    if kind == "bool":
        return lambda value: value is expected
    if kind == "number":
        return lambda value: (type(value) is int or type(value) is float) and value == expected
    return lambda value: type(value) is datetime and value == expected


def _with_elements(scalar: Check) -> Check:
    def check(value: Any) -> bool:
        if type(value) is list:
            return any(map(scalar, value))
        return scalar(value)

    return check


def _check_is(expected: Scalar) -> Check:
    if type(expected) is str:

        def is_string(value: Any) -> bool:
            if type(value) is str:
                return value == expected
            return type(value) is list and expected in value

        return is_string
    return _with_elements(_scalar_equals(expected))


def _check_in(options: Sequence[Scalar]) -> Check:
    strings = frozenset(item for item in options if type(item) is str)
    numbers = frozenset(item for item in options if type(item) in (int, float))
    bools = frozenset(item for item in options if type(item) is bool)
    moments = frozenset(item for item in options if type(item) is datetime)

    def scalar(value: Any) -> bool:
        value_type = type(value)
        if value_type is str:
            return value in strings
        if value_type is int or value_type is float:
            return value in numbers
        if value_type is bool:
            return value in bools
        if value_type is datetime:
            return value in moments
        return False

    return _with_elements(scalar)


_ORDER = {
    TraitOperator.GT: operator.gt,
    TraitOperator.GTE: operator.ge,
    TraitOperator.LT: operator.lt,
    TraitOperator.LTE: operator.le,
    TraitOperator.AFTER: operator.gt,
    TraitOperator.BEFORE: operator.lt,
}


def _scalar_order(compare: Callable[[Any, Any], bool], bound: Scalar) -> Check:
    kind = kind_of(bound)
    if kind == "number":
        return lambda value: (type(value) is int or type(value) is float) and compare(value, bound)
    if kind == "string":
        return lambda value: type(value) is str and compare(value, bound)
    return lambda value: (
        type(value) is datetime and value.tzinfo is not None and compare(value, bound)
    )


def _check_between(low: Scalar, high: Scalar) -> Check:
    # Like a MongoDB range on an array: one element may satisfy the low bound, another the high.
    above = _with_elements(_scalar_order(operator.ge, low))
    below = _with_elements(_scalar_order(operator.le, high))
    return lambda value: above(value) and below(value)


def _check_contains(needle: Scalar) -> Check:
    if type(needle) is str:

        def contains_string(value: Any) -> bool:
            value_type = type(value)
            if value_type is str or value_type is list:
                return needle in value
            return False

        return contains_string
    element = _scalar_equals(needle)
    return lambda value: type(value) is list and any(map(element, value))


def _check_affix(text: str, *, prefix: bool) -> Check:
    def scalar(value: Any) -> bool:
        if type(value) is not str:
            return False
        return value.startswith(text) if prefix else value.endswith(text)

    return _with_elements(scalar)


def _value_check(operator_: TraitOperator, value: Any) -> Check:
    op = TraitOperator
    if operator_ == op.IS:
        return _check_is(value)
    if operator_ == op.IN:
        return _check_in(value)
    if operator_ in _ORDER:
        return _with_elements(_scalar_order(_ORDER[operator_], value))
    if operator_ == op.BETWEEN:
        return _check_between(value[0], value[1])
    if operator_ == op.CONTAINS:
        return _check_contains(value)
    if operator_ == op.STARTS_WITH:
        return _check_affix(value, prefix=True)
    if operator_ == op.ENDS_WITH:
        return _check_affix(value, prefix=False)
    if operator_ == op.EXISTS:
        return lambda found: found is not None
    raise AssertionError(f"no value check for {operator_}")


def _latest(value: Any) -> datetime | None:
    if type(value) is datetime:
        return value if value.tzinfo is not None else None
    if type(value) is list:
        moments = [item for item in value if type(item) is datetime and item.tzinfo is not None]
        return max(moments) if moments else None
    return None


def _within_last(resolve: Resolver, window: timedelta) -> Node:
    """True while the latest date-time is no older than `window`; flips when it ages out."""

    def latest_of(profile: Profile) -> datetime | None:
        value = resolve(profile)
        if value is MISSING:
            return None
        if type(value) is _Many:
            moments = [moment for moment in map(_latest, value.values) if moment is not None]
            return max(moments) if moments else None
        return _latest(value)

    def test(profile: Profile, now: datetime) -> bool:
        latest = latest_of(profile)
        return latest is not None and latest >= now - window

    def timed(profile: Profile, now: datetime) -> tuple[bool, datetime | None]:
        latest = latest_of(profile)
        if latest is not None and latest >= now - window:
            return True, latest + window + TICK
        return False, None

    return Node(test, timed)


def compile_trait(condition: TraitCondition, scope: str = "profile") -> Node:
    """A trait (or, in the `properties` scope, an event property) condition."""
    ref = resolve_field(condition.field, "properties" if scope == "properties" else "profile")
    resolve = field_resolver(ref)
    positive = condition.operator
    negated = False
    for negative, plain in (
        (TraitOperator.IS_NOT, TraitOperator.IS),
        (TraitOperator.NOT_IN, TraitOperator.IN),
        (TraitOperator.NOT_CONTAINS, TraitOperator.CONTAINS),
        (TraitOperator.NOT_EXISTS, TraitOperator.EXISTS),
        (TraitOperator.NOT_WITHIN_LAST, TraitOperator.WITHIN_LAST),
    ):
        if positive == negative:
            positive, negated = plain, True
    if positive == TraitOperator.WITHIN_LAST:
        assert isinstance(condition.value, str)
        node = _within_last(resolve, parse_duration(condition.value))
    else:
        node = Node(_leaf(resolve, _value_check(positive, condition.value)))
    return _not(node) if negated else node


def compile_property_filter(conditions: Sequence[TraitCondition]) -> Callable[[Profile], bool]:
    """All `where` filters of an event condition, as a test on the event's properties."""
    tests = [compile_trait(condition, "properties").test for condition in conditions]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def matches(properties: Profile) -> bool:
        return all(test(properties, epoch) for test in tests)

    return matches


# ---------------------------------------------------------------------------------------------
# Events, intents, audiences


def _entry_getter(condition: EventCondition) -> Callable[[Profile], Any]:
    if uses_counter(condition):
        container, key = "counters", counter_key(condition)
    else:
        container, key = "events", encode_key(condition.event)

    def entry(profile: Profile) -> Any:
        entries = profile.get(container)
        if isinstance(entries, dict):
            return entries.get(key)
        return None

    return entry


def _count_at_least(entry: Callable[[Profile], Any], threshold: int) -> Node:
    if threshold <= 0:
        return _TRUE

    def test(profile: Profile, now: datetime) -> bool:
        found = entry(profile)
        if not isinstance(found, dict):
            return False
        count = found.get("count")
        return (type(count) is int or type(count) is float) and count >= threshold

    return Node(test)


def _recent_at_least(entry: Callable[[Profile], Any], threshold: int, window: timedelta) -> Node:
    """At least `threshold` events since now - window ⇔ the threshold-th newest is that recent."""
    if threshold <= 0:
        return _TRUE
    index = threshold - 1

    def nth_newest(profile: Profile) -> datetime | None:
        found = entry(profile)
        if not isinstance(found, dict):
            return None
        recent = found.get("recent")
        if type(recent) is not list or len(recent) <= index:
            return None
        moment = recent[index]
        if type(moment) is datetime and moment.tzinfo is not None:
            return moment
        return None

    def test(profile: Profile, now: datetime) -> bool:
        moment = nth_newest(profile)
        return moment is not None and moment >= now - window

    def timed(profile: Profile, now: datetime) -> tuple[bool, datetime | None]:
        moment = nth_newest(profile)
        if moment is not None and moment >= now - window:
            return True, moment + window + TICK
        return False, None

    return Node(test, timed)


def count_thresholds(operator_: CountOperator, value: int) -> tuple[int | None, int | None]:
    """A count comparison as (need at least, must not reach): at most 3 is (None, 4)."""
    if operator_ == CountOperator.GTE:
        return value, None
    if operator_ == CountOperator.GT:
        return value + 1, None
    if operator_ == CountOperator.LT:
        return None, value
    if operator_ == CountOperator.LTE:
        return None, value + 1
    return value, value + 1


def _compile_event(condition: EventCondition) -> Node:
    entry = _entry_getter(condition)
    window = condition.window
    if isinstance(window, RelativeWindow):
        span = parse_duration(window.last)

        def at_least(threshold: int) -> Node:
            return _recent_at_least(entry, threshold, span)
    else:

        def at_least(threshold: int) -> Node:
            return _count_at_least(entry, threshold)

    count = condition.count
    low, high = count_thresholds(count.operator, count.value) if count else (1, None)
    parts: list[Node] = []
    if low is not None:
        parts.append(at_least(low))
    if high is not None:
        parts.append(_not(at_least(high)))
    node = parts[0] if len(parts) == 1 else _all(parts)
    return node if condition.performed else _not(node)


def _compile_intent(condition: IntentCondition) -> Node:
    topics = tuple(encode_key(topic) for topic in condition.topics)
    span = timedelta(days=condition.days)
    min_score = condition.min_score

    def latest_signal(profile: Profile, since: datetime) -> datetime | None:
        intents = profile.get("intents")
        if not isinstance(intents, dict):
            return None
        latest: datetime | None = None
        for topic in topics:
            entries = intents.get(topic)
            if type(entries) is not list:
                continue
            for entry in entries[:INTENT_MAX_ENTRIES]:
                if not isinstance(entry, dict):
                    continue
                at = entry.get("at")
                score = entry.get("score")
                if (
                    type(at) is datetime
                    and at.tzinfo is not None
                    and at >= since
                    and (type(score) is int or type(score) is float)
                    and score >= min_score
                    and (latest is None or at > latest)
                ):
                    latest = at
        return latest

    def test(profile: Profile, now: datetime) -> bool:
        return latest_signal(profile, now - span) is not None

    def timed(profile: Profile, now: datetime) -> tuple[bool, datetime | None]:
        latest = latest_signal(profile, now - span)
        if latest is None:
            return False, None
        return True, latest + span + TICK

    return Node(test, timed)


def _compile_audience(condition: AudienceCondition) -> Node:
    audience_id = condition.audience_id
    if audience_id is None:
        raise RuleError(
            "unresolved_audience",
            f"audience {condition.audience_name!r} must be resolved to an id before compiling",
            details={"audience_name": condition.audience_name},
        )

    def member(profile: Profile, now: datetime) -> bool:
        audiences = profile.get("audiences")
        if type(audiences) is list:
            return audience_id in audiences
        return audiences == audience_id

    node = Node(member)
    return node if condition.member else _not(node)
