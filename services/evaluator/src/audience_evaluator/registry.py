"""The audiences the evaluator keeps current, compiled once per rule version."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from audience_evaluator.profiles import EVERYTHING
from audience_shared.rules import (
    CompiledRule,
    CounterSpec,
    Evaluation,
    Group,
    References,
    compile_predicate,
    references,
)


class ListPredicate:
    """Static and synced audiences: a member while the user is on the audience's own list."""

    def __init__(self, audience_id: str) -> None:
        self._audience_id = audience_id

    def evaluate(self, profile: Mapping[str, Any], now: datetime) -> Evaluation:
        return Evaluation(
            matched=self._audience_id in profile.get("lists", ()), next_change_at=None
        )


@dataclass(frozen=True)
class ActiveAudience:
    id: str
    project_id: str
    version: int
    rule: Group | None
    predicate: CompiledRule | ListPredicate
    refs: References
    depends_on: frozenset[str]
    list_based: bool = False

    @cached_property
    def triggers(self) -> frozenset[str]:
        """The profile changes (as `fold` names them, "kind:name") that can alter the answer,
        except "any event" (`refs.any_event`), which no finite set names."""
        if self.list_based:
            return frozenset({f"list:{self.id}"})
        keys = {f"event:{name}" for name in self.refs.events}
        for ref in self.refs.traits:
            # A trait written as a whole affects every path under it: "a" and "a.b" for "a.b.c".
            parts = ref.split(".")
            keys.update(f"trait:{'.'.join(parts[:n])}" for n in range(1, len(parts) + 1))
        keys.update(f"counter:{name}" for name in self.refs.counters)
        keys.update(f"intent:{topic}" for topic in self.refs.intent_topics)
        keys.update(f"audience:{audience_id}" for audience_id in self.refs.audiences)
        return frozenset(keys)

    def affected_by(self, changed: set[str]) -> bool:
        """Whether a profile change can alter this audience's answer: the definition that
        `AudienceRegistry.affected` looks up by trigger for a whole project (and is tested
        against), so the evaluator never asks each audience in turn."""
        if EVERYTHING in changed or not self.triggers.isdisjoint(changed):
            return True
        return self.refs.any_event and any(item.startswith(ANY_EVENT) for item in changed)


# Changes every event (or a field derived from all of them) makes, for `refs.any_event`.
ANY_EVENT = ("event:", "derived:")
NONE: frozenset[str] = frozenset()


def compile_audience(doc: dict[str, Any]) -> ActiveAudience:
    if doc.get("kind") in ("static", "synced") and not doc.get("rule"):
        return ActiveAudience(
            id=doc["_id"],
            project_id=doc["project_id"],
            version=doc["rule_version"],
            rule=None,
            predicate=ListPredicate(doc["_id"]),
            refs=References(),
            depends_on=frozenset(),
            list_based=True,
        )
    rule = Group.model_validate(doc["rule"])
    refs = references(rule)
    return ActiveAudience(
        id=doc["_id"],
        project_id=doc["project_id"],
        version=doc["rule_version"],
        rule=rule,
        predicate=compile_predicate(rule),
        refs=refs,
        depends_on=frozenset(refs.audiences),
    )


@dataclass
class AudienceRegistry:
    """Per project, audiences in dependency order: an audience after those it refers to."""

    by_id: dict[str, ActiveAudience] = field(default_factory=dict)
    _ordered: dict[str, list[ActiveAudience]] = field(default_factory=dict)
    _counters: dict[str, list[CounterSpec]] = field(default_factory=dict)
    # Per project: trigger → the audiences it affects, and the audiences any event affects.
    _by_trigger: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    _any_event: dict[str, set[str]] = field(default_factory=dict)
    _all_ids: dict[str, frozenset[str]] = field(default_factory=dict)

    def replace_all(self, audiences: Iterable[ActiveAudience]) -> None:
        self.by_id = {audience.id: audience for audience in audiences}
        self._reorder()

    def put(self, audience: ActiveAudience) -> None:
        self.by_id[audience.id] = audience
        self._reorder()

    def remove(self, audience_id: str) -> None:
        self.by_id.pop(audience_id, None)
        self._reorder()

    def for_project(self, project_id: str) -> list[ActiveAudience]:
        return self._ordered.get(project_id, [])

    def counters(self, project_id: str) -> list[CounterSpec]:
        return self._counters.get(project_id, [])

    def affected(self, project_id: str, changed: Iterable[str]) -> set[str]:
        """Ids of the project's audiences whose `affected_by(changed)` holds, looked up by
        trigger rather than asked of each audience (it runs for every profile processed)."""
        by_trigger = self._by_trigger.get(project_id, {})
        found: set[str] = set()
        any_event = False
        for key in changed:
            if key == EVERYTHING:
                return set(self._all_ids.get(project_id, ()))
            found.update(by_trigger.get(key, ()))
            any_event = any_event or key.startswith(ANY_EVENT)
        if any_event:
            found.update(self._any_event.get(project_id, ()))
        return found

    def referring(self, project_id: str, audience_id: str) -> frozenset[str] | set[str]:
        """Ids of the project's audiences whose rules refer to this one: `affected` of its
        "audience:<id>" change, asked for each membership change (most audiences have none)."""
        return self._by_trigger.get(project_id, {}).get(f"audience:{audience_id}", NONE)

    def _reorder(self) -> None:
        grouped: dict[str, list[ActiveAudience]] = defaultdict(list)
        for audience in self.by_id.values():
            grouped[audience.project_id].append(audience)
        self._ordered = {project: _topological(items) for project, items in grouped.items()}
        # Asked for every profile processed: worked out once per change of the audiences.
        self._counters = {}
        self._by_trigger = {}
        self._any_event = {}
        self._all_ids = {}
        for project, audiences in self._ordered.items():
            specs: dict[str, CounterSpec] = {}
            by_trigger: dict[str, set[str]] = defaultdict(set)
            for audience in audiences:
                specs.update(audience.refs.counters)
                for key in audience.triggers:
                    by_trigger[key].add(audience.id)
            self._counters[project] = list(specs.values())
            self._by_trigger[project] = dict(by_trigger)
            self._any_event[project] = {a.id for a in audiences if a.refs.any_event}
            self._all_ids[project] = frozenset(a.id for a in audiences)


def _topological(audiences: list[ActiveAudience]) -> list[ActiveAudience]:
    by_id = {a.id: a for a in audiences}
    ordered: list[ActiveAudience] = []
    placed: set[str] = set()

    def visit(audience: ActiveAudience, path: frozenset[str]) -> None:
        if audience.id in placed or audience.id in path:
            return  # cycles are refused by the API; never loop on one that slipped through
        for dep in sorted(audience.depends_on):
            if dep in by_id:
                visit(by_id[dep], path | {audience.id})
        placed.add(audience.id)
        ordered.append(audience)

    for audience in sorted(audiences, key=lambda a: a.id):
        visit(audience, frozenset())
    return ordered
