"""Hypothesis strategies for rules and profiles, shared by unit and store agreement tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from audience_shared.profile import encode_key
from audience_shared.rules import (
    AbsoluteWindow,
    AudienceCondition,
    CountClause,
    CountOperator,
    EventCondition,
    Group,
    IntentCondition,
    RelativeWindow,
    TraitCondition,
    TraitOperator,
    references,
)
from audience_shared.rules.durations import parse_duration
from audience_shared.rules.model import check_field_path

# Two families: narrow rules and profiles draw from small pools of fields and values (and
# profiles are built around the rules' own fields and values) so that conditions actually match,
# and just miss, generated profiles: type mismatches, lists, arrays of sub-documents, window
# boundaries. Wide rules use arbitrary names and text to stress the criteria round trip.

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)

# Instants around every window boundary the rules below use.
MOMENTS = [
    NOW + timedelta(days=1),
    NOW,
    NOW - MS,
    NOW - timedelta(hours=1),
    NOW - timedelta(hours=12) - MS,
    NOW - timedelta(days=1),
    NOW - timedelta(days=7),
    NOW - timedelta(days=7) - MS,
    NOW - timedelta(days=29),
    NOW - timedelta(days=30),
    NOW - timedelta(days=30) - MS,
    NOW - timedelta(days=45),
    NOW - timedelta(days=200),
    datetime(2024, 1, 1, tzinfo=UTC),
    datetime(2023, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
]
STRINGS = ["premium", "free", "pre", "mium", "", "Premium", "a.b*c", "50", "x y"]
NUMBERS: list[Any] = [0, 1, 1.0, 2.5, -3, 18, 50, 100]
SCALARS: list[Any] = [*STRINGS, *NUMBERS, True, False, *MOMENTS[::3]]
DURATIONS = ["1h", "12h", "1d", "7d", "30d", "2w"]

TRAIT_FIELDS = ["plan", "age", "tags", "flag", "signup", "meta.tier", "items.sku", "last_active"]
DERIVED_FIELDS = [
    "event_count",
    "first_seen",
    "last_seen",
    "last_active",
    "events.purchase.count",
    "events.page.view.last_at",
]
EVENTS = ["purchase", "app_open", "page.view", "$weird%name"]
TOPICS = ["shoes", "travel.eu"]
AUDIENCES = ["aud_1", "aud_2"]

scalars = st.sampled_from(SCALARS)


def _value_for(operator: TraitOperator) -> st.SearchStrategy[Any]:
    op = TraitOperator
    if operator in (op.EXISTS, op.NOT_EXISTS):
        return st.none()
    if operator in (op.IN, op.NOT_IN):
        return st.lists(scalars, min_size=1, max_size=4)
    if operator == op.BETWEEN:
        ordered = st.one_of(
            st.lists(st.sampled_from(NUMBERS), min_size=2, max_size=2),
            st.lists(st.sampled_from(STRINGS), min_size=2, max_size=2),
            st.lists(st.sampled_from(MOMENTS), min_size=2, max_size=2),
        )
        return ordered.map(sorted)
    if operator in (op.GT, op.GTE, op.LT, op.LTE):
        return st.sampled_from([*NUMBERS, *STRINGS, *MOMENTS[::2]])
    if operator in (op.STARTS_WITH, op.ENDS_WITH):
        return st.sampled_from(STRINGS)
    if operator in (op.BEFORE, op.AFTER):
        return st.sampled_from(MOMENTS)
    if operator in (op.WITHIN_LAST, op.NOT_WITHIN_LAST):
        return st.sampled_from(DURATIONS)
    return scalars


@st.composite
def trait_conditions(draw: st.DrawFn, fields: list[str] | None = None) -> TraitCondition:
    field = draw(st.sampled_from(fields or [*TRAIT_FIELDS, *DERIVED_FIELDS]))
    operator = draw(st.sampled_from(list(TraitOperator)))
    value = draw(_value_for(operator))
    return TraitCondition(field=field, operator=operator, value=value)


@st.composite
def property_conditions(draw: st.DrawFn) -> TraitCondition:
    operator = draw(
        st.sampled_from(
            [
                op
                for op in TraitOperator
                if op not in (TraitOperator.WITHIN_LAST, TraitOperator.NOT_WITHIN_LAST)
            ]
        )
    )
    return TraitCondition(
        field=draw(st.sampled_from(["amount", "currency", "meta.kind"])),
        operator=operator,
        value=draw(_value_for(operator)),
    )


@st.composite
def count_clauses(draw: st.DrawFn) -> CountClause | None:
    if draw(st.booleans()):
        return None
    return CountClause(
        operator=draw(st.sampled_from(list(CountOperator))), value=draw(st.integers(0, 4))
    )


@st.composite
def event_conditions(draw: st.DrawFn) -> EventCondition:
    window_kind = draw(st.sampled_from(["none", "relative", "absolute"]))
    window: RelativeWindow | AbsoluteWindow | None = None
    if window_kind == "relative":
        window = RelativeWindow(last=draw(st.sampled_from(DURATIONS)))
    elif window_kind == "absolute":
        start, end = sorted(draw(st.lists(st.sampled_from(MOMENTS), min_size=2, max_size=2)))
        window = AbsoluteWindow(from_=start, to=end)
    return EventCondition(
        event=draw(st.sampled_from(EVENTS)),
        performed=draw(st.booleans()),
        count=draw(count_clauses()),
        window=window,
        where=draw(st.lists(property_conditions(), max_size=2)),
    )


@st.composite
def intent_conditions(draw: st.DrawFn) -> IntentCondition:
    return IntentCondition(
        topics=draw(st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2, unique=True)),
        min_score=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9])),
        days=draw(st.integers(1, 14)),
    )


@st.composite
def audience_conditions(draw: st.DrawFn) -> AudienceCondition:
    return AudienceCondition(
        audience_id=draw(st.sampled_from(AUDIENCES)), member=draw(st.booleans())
    )


narrow_conditions = st.one_of(
    trait_conditions(),
    trait_conditions(),
    event_conditions(),
    intent_conditions(),
    audience_conditions(),
)


def _groups(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Group]:
    return st.builds(
        Group,
        match=st.sampled_from(["all", "any"]),
        negate=st.booleans(),
        rules=st.lists(children, min_size=1, max_size=4),
    )


def _rules(conditions: st.SearchStrategy[Any], max_leaves: int) -> st.SearchStrategy[Group]:
    tree = st.recursive(conditions, _groups, max_leaves=max_leaves)
    return tree.map(lambda node: node if isinstance(node, Group) else Group(rules=[node]))


narrow_rules = _rules(narrow_conditions, 8)
leaf_rules = narrow_conditions.map(lambda condition: Group(rules=[condition]))
rule_batches = st.lists(st.one_of(leaf_rules, leaf_rules, narrow_rules), min_size=4, max_size=8)
"""Several rules judged against the same profiles: leaves alone, and combinations."""
trait_batches = st.lists(
    trait_conditions(TRAIT_FIELDS).map(lambda condition: Group(rules=[condition])),
    min_size=4,
    max_size=8,
)
"""Single trait conditions, where the type and array semantics live."""


# ---------------------------------------------------------------------------------------------
# Profiles


def _recent(count: int) -> st.SearchStrategy[list[datetime]]:
    return st.lists(st.sampled_from(MOMENTS[1:]), max_size=count).map(
        lambda moments: sorted(moments, reverse=True)
    )


@st.composite
def event_entries(draw: st.DrawFn) -> dict[str, Any]:
    recent = draw(_recent(6))
    entry: dict[str, Any] = {"count": len(recent) + draw(st.integers(0, 3)), "recent": recent}
    if recent:
        entry["last_at"] = recent[0]
    return entry


def _near(value: Any) -> list[Any]:
    """Values equal to, just beside, or of another kind than a rule value."""
    if isinstance(value, bool):
        return [value, not value, int(value)]
    if isinstance(value, int | float):
        return [value, value + 1, value - 1, float(value), str(value)]
    if isinstance(value, datetime):
        return [value, value + MS, value - MS, value.date().isoformat()]
    if isinstance(value, str):
        return [value, value + "x", "x" + value + "x", value.upper(), value[:-1] or "z"]
    return []


def rule_values(rule: Group) -> list[Any]:
    """Every scalar a rule compares with, and its neighbours."""
    found: list[Any] = []
    stack: list[Any] = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, Group):
            stack.extend(node.rules)
        elif isinstance(node, TraitCondition):
            values = node.value if isinstance(node.value, list) else [node.value]
            for value in values:
                if value is not None and not (isinstance(value, str) and value in DURATIONS):
                    found.extend(_near(value))
    return found


def _targets(rule: Group) -> list[tuple[list[str], list[Any]]]:
    """Trait paths the rule reads, each with values that just match or just miss."""
    targets: list[tuple[list[str], list[Any]]] = []
    stack: list[Any] = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, Group):
            stack.extend(node.rules)
        elif isinstance(node, TraitCondition) and node.field in TRAIT_FIELDS:
            if node.operator in (TraitOperator.WITHIN_LAST, TraitOperator.NOT_WITHIN_LAST):
                assert isinstance(node.value, str)
                edge = NOW - parse_duration(node.value)
                near = [edge, edge - MS, edge + MS, edge.isoformat()]
            else:
                values = node.value if isinstance(node.value, list) else [node.value]
                near = [item for value in values if value is not None for item in _near(value)]
            targets.append((node.field.split("."), near or SCALARS))
    return targets


def _trait_values(pool: list[Any]) -> st.SearchStrategy[Any]:
    items = st.sampled_from(pool)
    return st.one_of(st.none(), items, items, st.lists(items, max_size=3))


@st.composite
def traits(draw: st.DrawFn, pool: list[Any] | None = None) -> dict[str, Any]:
    values = _trait_values(pool or SCALARS)
    result: dict[str, Any] = {}
    for key in ["plan", "age", "tags", "flag", "signup", "last_active", "subscriptions"]:
        if draw(st.booleans()):
            result[key] = draw(values)
    if draw(st.booleans()):
        result["meta"] = draw(
            st.one_of(
                st.fixed_dictionaries({}, optional={"tier": values}),
                values,
                st.lists(st.fixed_dictionaries({}, optional={"tier": values}), max_size=2),
            )
        )
    if draw(st.booleans()):
        result["items"] = draw(
            st.lists(
                # FerretDB v1 cannot store arrays directly inside arrays.
                st.one_of(
                    st.fixed_dictionaries({}, optional={"sku": values}),
                    st.sampled_from(pool or SCALARS),
                ),
                max_size=3,
            )
        )
    return result


@st.composite
def profiles(draw: st.DrawFn, rule: Group | None = None) -> dict[str, Any]:
    """A well-formed profile; its counters are the ones `rule` reads, so they can match."""
    pool = SCALARS + 3 * rule_values(rule) if rule is not None else SCALARS
    profile: dict[str, Any] = {"traits": draw(traits(pool))}
    for path, near in _targets(rule) if rule is not None else []:
        if draw(st.booleans()):
            continue
        items = st.sampled_from(near)
        value = draw(st.one_of(items, st.lists(st.one_of(items, scalars), min_size=1, max_size=3)))
        if len(path) == 1:
            profile["traits"][path[0]] = value
            continue
        inner = {path[1]: value}
        other = draw(st.fixed_dictionaries({}, optional={path[1]: st.one_of(items, scalars)}))
        # A nested trait, or one inside an array of sub-documents, in either order.
        profile["traits"][path[0]] = draw(
            st.sampled_from([inner, [inner, other], [other, inner], [other]])
        )
    events = {encode_key(name): draw(event_entries()) for name in EVENTS if draw(st.booleans())}
    if events:
        profile["events"] = events
        profile["event_count"] = sum(entry["count"] for entry in events.values())
        moments = [moment for entry in events.values() for moment in entry["recent"]]
        if moments:
            profile["last_seen"] = max(moments)
            profile["first_seen"] = min(moments)
    if rule is not None:
        keys = sorted(references(rule).counters)
        counters = {key: draw(event_entries()) for key in keys if draw(st.booleans())}
        if counters:
            profile["counters"] = counters
    if draw(st.booleans()):
        profile["intents"] = {
            encode_key(topic): draw(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "at": st.sampled_from(MOMENTS),
                            "score": st.sampled_from([0.1, 0.3, 0.5, 0.9, 1]),
                        }
                    ),
                    max_size=4,
                )
            )
            for topic in TOPICS
            if draw(st.booleans())
        }
    if draw(st.booleans()):
        profile["audiences"] = draw(st.lists(st.sampled_from(AUDIENCES), unique=True))
    return profile


# ---------------------------------------------------------------------------------------------
# Wide rules for the criteria round trip


def _valid_field(text: str) -> bool:
    try:
        check_field_path(text)
    except ValueError:
        return False
    return True


field_names = st.one_of(
    st.sampled_from(
        [*TRAIT_FIELDS, *DERIVED_FIELDS, "in", "not", "users", "with", "in-app", "a.b-c"]
    ),
    st.text(
        st.characters(codec="utf-8", exclude_characters="`\x00"),
        min_size=1,
        max_size=12,
    ).filter(_valid_field),
)
free_text = st.text(st.characters(codec="utf-8"), max_size=12)
names = st.one_of(
    st.sampled_from([*EVENTS, "Order Completed", "event", "in", "did", "x-y", "a:b/c"]),
    st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        min_size=1,
        max_size=12,
    ),
)
wide_scalars = st.one_of(
    free_text,
    st.sampled_from(["true", "false", "set", "and", "Users", "7d", "2024-01-01x", "-1"]),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC),
    ).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)),
)


@st.composite
def wide_trait_conditions(draw: st.DrawFn) -> TraitCondition:
    operator = draw(st.sampled_from(list(TraitOperator)))
    if operator in (
        TraitOperator.IS,
        TraitOperator.IS_NOT,
        TraitOperator.CONTAINS,
        TraitOperator.NOT_CONTAINS,
    ):
        value: Any = draw(wide_scalars)
    elif operator in (TraitOperator.STARTS_WITH, TraitOperator.ENDS_WITH):
        value = draw(free_text)
    elif operator in (TraitOperator.IN, TraitOperator.NOT_IN):
        value = draw(st.lists(wide_scalars, min_size=1, max_size=3))
    else:
        value = draw(_value_for(operator))
    try:
        return TraitCondition(field=draw(field_names), operator=operator, value=value)
    except ValueError:
        # ISO-looking text becomes a date-time, which some operators refuse; use a safe value.
        return TraitCondition(field=draw(field_names), operator=TraitOperator.EXISTS)


@st.composite
def wide_event_conditions(draw: st.DrawFn) -> EventCondition:
    condition = draw(event_conditions())
    return condition.model_copy(
        update={
            "event": draw(names),
            "where": draw(st.lists(wide_trait_conditions().filter(_property_safe), max_size=2)),
            "count": draw(count_clauses()),
        }
    )


def _property_safe(condition: TraitCondition) -> bool:
    return condition.operator not in (
        TraitOperator.WITHIN_LAST,
        TraitOperator.NOT_WITHIN_LAST,
    ) and all(part and not part.isdigit() for part in condition.field.split("."))


@st.composite
def wide_intent_conditions(draw: st.DrawFn) -> IntentCondition:
    return IntentCondition(
        topics=draw(st.lists(names, min_size=1, max_size=3)),
        min_score=draw(st.floats(allow_nan=False, allow_infinity=False)),
        days=draw(st.integers(1, 14)),
    )


@st.composite
def wide_audience_conditions(draw: st.DrawFn) -> AudienceCondition:
    audience_id = draw(st.one_of(st.none(), names))
    audience_name = draw(names) if audience_id is None or draw(st.booleans()) else None
    return AudienceCondition(
        audience_id=audience_id, audience_name=audience_name, member=draw(st.booleans())
    )


wide_conditions = st.one_of(
    wide_trait_conditions(),
    wide_event_conditions(),
    wide_intent_conditions(),
    wide_audience_conditions(),
)

wide_rules = _rules(wide_conditions, 10)
