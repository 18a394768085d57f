"""The compiled predicate against the naive walk, its next-change promise, references, explain."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_shared.profile import (
    INTENT_MAX_ENTRIES,
    add_intent_signal,
    add_recent,
    coerce_trait_value,
    decode_key,
    encode_key,
)
from audience_shared.rules import (
    AudienceCondition,
    Group,
    RuleError,
    compile_predicate,
    evaluate_naive,
    explain,
    find_audience_cycle,
    parse_criteria,
    references,
    render_criteria,
    resolve_audience_names,
    rule_from_filter,
)
from tests.unit.rules.strategies import NOW, narrow_rules, profiles, trait_batches

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(st.data())
def test_compiled_predicate__any_rule_and_profile__agrees_with_naive_walk(
    data: st.DataObject,
) -> None:
    rule = data.draw(narrow_rules)
    profile = data.draw(profiles(rule))

    assert compile_predicate(rule).evaluate(profile, NOW) == evaluate_naive(rule, profile, NOW)


@PROPERTY_SETTINGS
@given(st.data())
def test_compiled_predicate__trait_conditions__agree_with_naive_walk(data: st.DataObject) -> None:
    rules = data.draw(trait_batches)
    profile = data.draw(profiles(Group(rules=list(rules))))

    for rule in rules:
        assert compile_predicate(rule).evaluate(profile, NOW) == evaluate_naive(rule, profile, NOW)


@PROPERTY_SETTINGS
@given(st.data())
def test_next_change_at__before_it__the_answer_holds(data: st.DataObject) -> None:
    rule = data.draw(narrow_rules)
    profile = data.draw(profiles(rule))
    predicate = compile_predicate(rule)
    evaluation = predicate.evaluate(profile, NOW)

    if evaluation.next_change_at is None:
        later = [NOW + timedelta(days=days) for days in (1, 15, 400)]
    else:
        assert evaluation.next_change_at > NOW
        span = evaluation.next_change_at - NOW - timedelta(milliseconds=1)
        fraction = data.draw(st.floats(0, 1))
        later = [NOW + span * fraction, NOW + span]
    for moment in later:
        assert predicate.evaluate(profile, moment).matched == evaluation.matched


def test_did_not_perform__last_event_ages_out__becomes_true_at_next_change() -> None:
    rule = parse_criteria("Users who did not perform purchase in the last 30 days")
    profile = {"events": {"purchase": {"count": 1, "recent": [NOW - timedelta(days=10)]}}}
    predicate = compile_predicate(rule)

    before = predicate.evaluate(profile, NOW)
    after = predicate.evaluate(profile, before.next_change_at or NOW)

    assert before.matched is False
    assert before.next_change_at == NOW + timedelta(days=20, milliseconds=1)
    assert after.matched is True
    assert after.next_change_at is None


def test_evaluate__naive_or_offset_now__is_normalized_to_utc_milliseconds() -> None:
    rule = parse_criteria("Users with last_active within 1 day")
    profile = {"last_seen": NOW - timedelta(days=1)}
    predicate = compile_predicate(rule)

    offset = NOW.astimezone(datetime.now().astimezone().tzinfo)
    assert predicate.evaluate(profile, offset).matched
    assert predicate.evaluate(profile, NOW.replace(tzinfo=None)).matched
    assert predicate.evaluate(profile, NOW + timedelta(microseconds=999)).matched


def test_compile_predicate__audience_known_only_by_name__is_unresolved() -> None:
    with pytest.raises(RuleError) as caught:
        compile_predicate(Group(rules=[AudienceCondition(audience_name="VIP")]))

    assert caught.value.code == "unresolved_audience"


def test_evaluate__malformed_values__never_raise() -> None:
    rule = parse_criteria(
        "Users with a > 1 AND b contains x AND c within 7 days AND d between 1 and 2 "
        "AND who performed e at least 2 times in the last 7 days AND intent t"
    )
    profile: dict[str, Any] = {
        "traits": {"a": {"x": 1}, "b": 5, "c": datetime(2024, 1, 1), "d": [[1], None]},
        "events": {"e": {"count": "many", "recent": ["yesterday", None]}},
        "intents": {"t": [{"at": "now", "score": "high"}, 3]},
        "audiences": "aud_1",
    }

    assert compile_predicate(rule).evaluate(profile, NOW).matched is False
    assert evaluate_naive(rule, profile, NOW).matched is False


def test_references__lists_what_the_rule_reads() -> None:
    rule = rule_from_filter(
        {
            "rules": [
                {"type": "trait", "field": "metadata.tier", "operator": "is", "value": "gold"},
                {"type": "trait", "field": "last_active", "operator": "within_last", "value": "7d"},
                {"type": "trait", "field": "events.app_open.count", "operator": "gt", "value": 3},
                {
                    "type": "event",
                    "event": "purchase",
                    "where": [{"field": "amount", "operator": "gt", "value": 100}],
                },
                {"type": "event", "event": "signup"},
                {"type": "intent", "topics": ["running"]},
                {"type": "audience", "audience_id": "aud_1"},
                {"type": "audience", "audience_name": "VIP"},
            ]
        }
    )

    found = references(rule)

    assert found.traits == {"metadata.tier", "last_active"}
    assert found.events == {"app_open", "purchase", "signup"}
    assert found.any_event is True
    assert found.audiences == {"aud_1"}
    assert found.audience_names == {"VIP"}
    assert found.intent_topics == {"running"}
    assert found.time_dependent is True
    assert len(found.counters) == 1


def test_references__static_rule__is_not_time_dependent() -> None:
    found = references(parse_criteria("Users from country=US AND plan=premium"))

    assert found.time_dependent is False
    assert found.counters == {}


def test_counter_spec__matches_filtered_events_in_its_window() -> None:
    rule = parse_criteria(
        "Users who performed purchase where (amount > 100 AND currency = EUR) "
        "between 2024-05-01 and 2024-05-31"
    )
    (spec,) = references(rule).counters.values()
    inside = datetime(2024, 5, 10, tzinfo=UTC)

    assert spec.keeps_recent is False
    assert spec.matches("purchase", {"amount": 150, "currency": "EUR"}, inside)
    assert not spec.matches("purchase", {"amount": 150, "currency": "USD"}, inside)
    assert not spec.matches("purchase", {"amount": "150", "currency": "EUR"}, inside)
    assert not spec.matches("refund", {"amount": 150, "currency": "EUR"}, inside)
    assert not spec.matches(
        "purchase", {"amount": 150, "currency": "EUR"}, datetime(2024, 6, 2, tzinfo=UTC)
    )


def test_counter_key__same_events_any_window_length__share_a_counter() -> None:
    week = references(
        parse_criteria("Users who performed buy where (a = 1 AND b = 2) in the last 7 days")
    )
    month = references(
        parse_criteria("Users who performed buy where (b = 2 AND a = 1) in the last 30 days")
    )

    assert week.counters.keys() == month.counters.keys()
    (spec,) = month.counters.values()
    assert spec.keeps_recent is True
    assert spec.retention == timedelta(days=30)


def test_find_audience_cycle__reports_the_loop() -> None:
    depends_on = {
        "a": frozenset({"b"}),
        "b": frozenset({"c"}),
        "c": frozenset({"a"}),
        "d": frozenset(),
    }

    assert find_audience_cycle("a", depends_on) == ["a", "b", "c", "a"]
    assert find_audience_cycle("d", depends_on) is None


def test_resolve_audience_names__fills_ids_and_keeps_names() -> None:
    rule = parse_criteria('Users in audience "VIP" OR (plan = pro AND not in audience "Churned")')

    resolved = resolve_audience_names(rule, {"VIP": "aud_1", "Churned": "aud_2"})

    assert references(resolved).audiences == {"aud_1", "aud_2"}
    assert parse_criteria(render_criteria(resolved)) == resolved
    assert compile_predicate(resolved).evaluate({"audiences": ["aud_1"]}, NOW).matched
    with pytest.raises(RuleError) as caught:
        resolve_audience_names(rule, {"VIP": "aud_1"})
    assert caught.value.code == "unknown_audience"


def test_explain__shows_outcomes_and_observed_values() -> None:
    rule = parse_criteria(
        "Users with plan=premium AND NOT (who performed purchase in the last 7 days)"
    )
    profile = {
        "traits": {"plan": "premium"},
        "events": {
            "purchase": {"count": 2, "recent": [NOW - timedelta(days=2), NOW - timedelta(days=20)]}
        },
    }

    tree = explain(rule, profile, NOW)

    assert tree["outcome"] is False
    assert tree["criteria"] == render_criteria(rule)
    plan, negated = tree["rules"]
    assert plan == {
        "type": "trait",
        "criteria": "plan = premium",
        "outcome": True,
        "next_change_at": None,
        "field": "plan",
        "operator": "is",
        "value": "premium",
        "observed": "premium",
    }
    assert negated["outcome"] is False
    assert negated["next_change_at"] == "2024-06-06T12:00:00.001000Z"
    event = negated["rules"][0]
    assert event["outcome"] is True
    assert event["observed"]["count"] == 1
    assert event["observed"]["source"] == "events.purchase"


@given(st.text())
def test_encode_key__any_name__round_trips_and_is_a_safe_field_name(name: str) -> None:
    key = encode_key(name)

    assert decode_key(key) == name
    assert "." not in key
    assert "$" not in key
    assert "\x00" not in key


def test_coerce_trait_value__iso_strings_nested__become_utc_milliseconds() -> None:
    value = coerce_trait_value(
        {"a": "2024-01-01", "b": ["2024-01-01T10:00:00.123456+02:00", "hello"], "c": float("nan")}
    )

    assert value == {
        "a": datetime(2024, 1, 1, tzinfo=UTC),
        "b": [datetime(2024, 1, 1, 8, 0, 0, 123000, tzinfo=UTC), "hello"],
        "c": None,
    }


def test_add_recent__keeps_newest_first_within_retention_and_limit() -> None:
    recent = add_recent(
        [NOW - timedelta(days=1), NOW - timedelta(days=400)], NOW - timedelta(hours=1), NOW
    )

    assert recent == [NOW - timedelta(hours=1), NOW - timedelta(days=1)]
    assert len(add_recent([NOW] * 1000, NOW, NOW)) == 1000


def test_add_intent_signal__drops_dominated_entries() -> None:
    entries = [
        {"at": NOW - timedelta(days=1), "score": 0.4},
        {"at": NOW - timedelta(days=2), "score": 0.3},
        {"at": NOW - timedelta(days=3), "score": 0.9},
        {"at": NOW - timedelta(days=20), "score": 1.0},
    ]

    kept = add_intent_signal(entries, NOW, 0.5, NOW)

    assert kept == [
        {"at": NOW, "score": 0.5},
        {"at": NOW - timedelta(days=3), "score": 0.9},
    ]
    many = [{"at": NOW - timedelta(minutes=i), "score": i / 1000} for i in range(100)]
    assert len(add_intent_signal(many, NOW - timedelta(hours=5), 0.0, NOW)) == INTENT_MAX_ENTRIES
