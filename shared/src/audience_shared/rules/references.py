"""What a rule reads, so the evaluator re-evaluates only the audiences an update can affect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from audience_shared.profile import derived_event_field
from audience_shared.rules.counters import CounterSpec, counter_key, uses_counter
from audience_shared.rules.durations import parse_duration
from audience_shared.rules.errors import RuleError
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
from audience_shared.rules.predicate import compile_property_filter

# Derived from every tracked event, whatever its name.
_ANY_EVENT_FIELDS = frozenset({"event_count", "first_seen", "last_seen", "last_active"})


@dataclass(frozen=True)
class References:
    """Everything a rule depends on.

    `traits` are the trait field paths as written (`metadata.tier`); a trait update affects the
    rule when it touches the first segment of one of them. `events` are event names whose
    arrival can change the answer; `any_event` is set when a derived field (event_count,
    first_seen, last_seen, last_active) makes every event relevant. `counters` are the counters
    the evaluator must maintain for this rule. `time_dependent` means the answer can change with
    the clock alone (see `Evaluation.next_change_at`).
    """

    traits: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    audiences: frozenset[str] = frozenset()
    counters: dict[str, CounterSpec] = field(default_factory=dict)
    intent_topics: frozenset[str] = frozenset()
    time_dependent: bool = False
    any_event: bool = False
    audience_names: frozenset[str] = frozenset()


def references(rule: Group) -> References:
    """Collect the references of `rule` (iteratively: rules may be deep)."""
    traits: set[str] = set()
    events: set[str] = set()
    audiences: set[str] = set()
    audience_names: set[str] = set()
    topics: set[str] = set()
    counters: dict[str, CounterSpec] = {}
    time_dependent = False
    any_event = False
    stack: list[Group] = [rule]
    while stack:
        group = stack.pop()
        for child in group.rules:
            if isinstance(child, Group):
                stack.append(child)
            elif isinstance(child, TraitCondition):
                event_field = derived_event_field(child.field)
                if event_field is not None:
                    events.add(event_field[0])
                elif child.field in _ANY_EVENT_FIELDS:
                    any_event = True
                    if child.field == "last_active":
                        traits.add("last_active")
                else:
                    traits.add(child.field)
                if child.operator in (TraitOperator.WITHIN_LAST, TraitOperator.NOT_WITHIN_LAST):
                    time_dependent = True
            elif isinstance(child, EventCondition):
                events.add(child.event)
                if isinstance(child.window, RelativeWindow):
                    time_dependent = True
                if uses_counter(child):
                    spec = _counter_spec(child)
                    known = counters.get(spec.key)
                    counters[spec.key] = spec if known is None else known.merged(spec)
            elif isinstance(child, IntentCondition):
                topics.update(child.topics)
                time_dependent = True
            elif isinstance(child, AudienceCondition):
                if child.audience_id is not None:
                    audiences.add(child.audience_id)
                elif child.audience_name is not None:
                    audience_names.add(child.audience_name)
    return References(
        traits=frozenset(traits),
        events=frozenset(events),
        audiences=frozenset(audiences),
        counters=counters,
        intent_topics=frozenset(topics),
        time_dependent=time_dependent,
        any_event=any_event,
        audience_names=frozenset(audience_names),
    )


def _counter_spec(condition: EventCondition) -> CounterSpec:
    window = condition.window
    relative = isinstance(window, RelativeWindow)
    return CounterSpec(
        key=counter_key(condition),
        event=condition.event,
        where=tuple(condition.where),
        window_from=window.from_ if isinstance(window, AbsoluteWindow) else None,
        window_to=window.to if isinstance(window, AbsoluteWindow) else None,
        keeps_recent=relative,
        retention=parse_duration(window.last) if isinstance(window, RelativeWindow) else None,
        where_test=compile_property_filter(condition.where),
    )


def resolve_audience_names(rule: Group, ids_by_name: Mapping[str, str]) -> Group:
    """`rule` with every audience named only by name given its id (the name is kept).

    Raises RuleError(code="unknown_audience") for a name missing from `ids_by_name`.
    """

    def resolve(node: Group | Condition) -> Group | Condition:
        if isinstance(node, Group):
            return node.model_copy(update={"rules": [resolve(child) for child in node.rules]})
        if isinstance(node, AudienceCondition) and node.audience_id is None:
            name = node.audience_name or ""
            if name not in ids_by_name:
                raise RuleError(
                    "unknown_audience",
                    f"there is no audience named {name!r} in this project",
                    details={"audience_name": name},
                )
            return node.model_copy(update={"audience_id": ids_by_name[name]})
        return node

    resolved = resolve(rule)
    assert isinstance(resolved, Group)
    return resolved


def find_audience_cycle(
    audience_id: str, depends_on: Mapping[str, frozenset[str]]
) -> list[str] | None:
    """A dependency cycle through `audience_id` as a path (`[a, b, a]`), or None.

    `depends_on` maps each audience id to the audience ids its rule references (its
    `References.audiences`), including the candidate rule of `audience_id` itself.
    """
    stack: list[tuple[str, list[str]]] = [(audience_id, [audience_id])]
    seen: set[str] = set()
    while stack:
        current, path = stack.pop()
        for target in sorted(depends_on.get(current, frozenset())):
            if target == audience_id:
                return [*path, target]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None
