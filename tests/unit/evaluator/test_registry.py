"""Which profile changes re-evaluate which audiences, and the registry's per-project views."""

from typing import Any

from audience_evaluator.profiles import EVERYTHING
from audience_evaluator.registry import AudienceRegistry, compile_audience
from audience_shared.rules import parse_criteria


def audience(audience_id: str, criteria: str | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": audience_id, "project_id": "p", "rule_version": 1, **extra}
    if criteria is not None:
        doc["rule"] = parse_criteria(criteria).model_dump(mode="json")
    return doc


BIG_PURCHASES = {
    "match": "all",
    "rules": [
        {
            "type": "event",
            "event": "purchase",
            "count": {"operator": "gte", "value": 2},
            "where": [{"type": "trait", "field": "amount", "operator": "gt", "value": 5}],
        }
    ],
}


def test_affected_by__trait_path__the_trait_or_any_parent_written_whole() -> None:
    tier = compile_audience(audience("a", "Users with metadata.tier=gold"))
    assert tier.affected_by({"trait:metadata"})
    assert tier.affected_by({"trait:metadata.tier"})
    assert not tier.affected_by({"trait:meta"})
    assert not tier.affected_by({"trait:metadata.tie"})
    assert not tier.affected_by({"event:app_open", "trait:plan"})
    assert tier.affected_by({EVERYTHING})


def test_affected_by__events_named_or_any_event_for_derived_fields() -> None:
    opens = compile_audience(audience("a", "Users who did app_open in the last 7 days"))
    assert opens.affected_by({"event:app_open"})
    assert not opens.affected_by({"event:purchase"})
    active = compile_audience(audience("b", "Users with last_active within 7 days"))
    assert active.affected_by({"event:purchase"})
    assert active.affected_by({"derived:last_seen"})


def test_affected_by__list_audience__only_its_own_list() -> None:
    listed = compile_audience(audience("l", None, kind="static"))
    assert listed.affected_by({"list:l"})
    assert not listed.affected_by({"list:other", "event:app_open", "trait:plan"})


def test_counters__per_project__follow_the_audiences() -> None:
    registry = AudienceRegistry()
    registry.put(compile_audience(audience("c", None, rule=BIG_PURCHASES)))
    assert [spec.event for spec in registry.counters("p")] == ["purchase"]
    registry.remove("c")
    assert registry.counters("p") == []


def test_affected__registry_lookup__agrees_with_each_audience() -> None:
    registry = AudienceRegistry()
    docs = [
        audience("tier", "Users with metadata.tier=gold"),
        audience("opens", "Users who did app_open in the last 7 days"),
        audience("active", "Users with last_active within 7 days"),
        audience("listed", None, kind="static"),
        audience("big", None, rule=BIG_PURCHASES),
        audience(
            "nested",
            None,
            rule={"match": "all", "rules": [{"type": "audience", "audience_id": "opens"}]},
        ),
        {**audience("elsewhere", "Users with plan=pro"), "project_id": "q"},
    ]
    for doc in docs:
        registry.put(compile_audience(doc))
    change_sets = [
        set(),
        {"trait:metadata"},
        {"trait:plan"},
        {"event:app_open"},
        {"event:purchase", "counter:purchase"},
        {"derived:last_seen"},
        {"list:listed", "list:other"},
        {"audience:opens"},
        {EVERYTHING},
    ]
    for changed in change_sets:
        expected = {a.id for a in registry.for_project("p") if a.affected_by(changed)}
        assert registry.affected("p", changed) == expected, changed
    assert registry.affected("p", {"audience:opens"}) == {"nested"}
    assert registry.affected("q", {"trait:plan"}) == {"elsewhere"}
    # The shortcut asked on each membership change agrees with the lookup.
    for doc in docs:
        project, audience_id = doc["project_id"], doc["_id"]
        assert registry.referring(project, audience_id) == registry.affected(
            project, {f"audience:{audience_id}"}
        )
    assert registry.referring("p", "opens") == {"nested"}
    assert registry.referring("elsewhere-project", "opens") == set()
