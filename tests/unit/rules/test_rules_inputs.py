"""The JSON input forms: seed 001 `filter`, seed 004 `filters`, seed 003 `properties`."""

from typing import Any

import pytest

from audience_shared.rules import (
    EventCondition,
    Group,
    IntentCondition,
    RuleError,
    TraitCondition,
    rule_from_filter,
    rule_from_filters,
    rule_from_properties,
)
from audience_shared.rules.model import CountClause, RelativeWindow


def trait(field: str, operator: str, value: Any = None) -> TraitCondition:
    return TraitCondition.model_validate({"field": field, "operator": operator, "value": value})


def test_rule_from_filter__nested_and_of_ors__keeps_the_structure() -> None:
    rule = rule_from_filter(
        {
            "match": "all",
            "rules": [
                {
                    "match": "any",
                    "rules": [
                        {"type": "trait", "field": "country", "operator": "is", "value": "US"},
                        {"type": "trait", "field": "country", "operator": "is", "value": "CA"},
                    ],
                },
                {
                    "match": "any",
                    "rules": [
                        {
                            "type": "event",
                            "event": "purchase",
                            "count": {"operator": "gte", "value": 2},
                            "window": {"last": "30d"},
                        },
                        {"type": "intent", "topics": ["running"], "min_score": 0.5, "days": 7},
                    ],
                },
            ],
        }
    )

    assert rule == Group(
        rules=[
            Group(match="any", rules=[trait("country", "is", "US"), trait("country", "is", "CA")]),
            Group(
                match="any",
                rules=[
                    EventCondition(
                        event="purchase",
                        count=CountClause.model_validate({"operator": "gte", "value": 2}),
                        window=RelativeWindow(last="30d"),
                    ),
                    IntentCondition(topics=["running"], min_score=0.5, days=7),
                ],
            ),
        ]
    )


def test_rule_from_filter__logical_operator_aliases__are_accepted() -> None:
    rule = rule_from_filter(
        {
            "match": "OR",
            "rules": [
                {"type": "trait", "field": "a", "operator": "exists"},
                {
                    "type": "group",
                    "match": "and",
                    "rules": [
                        {"type": "trait", "field": "b", "operator": "exists"},
                        {"type": "trait", "field": "c", "operator": "exists"},
                    ],
                },
            ],
        }
    )

    assert rule == Group(
        match="any",
        rules=[trait("a", "exists"), Group(rules=[trait("b", "exists"), trait("c", "exists")])],
    )


def test_rule_from_filter__single_nested_group__collapses_to_canonical_form() -> None:
    rule = rule_from_filter(
        {
            "match": "any",
            "rules": [
                {
                    "match": "any",
                    "negate": True,
                    "rules": [
                        {"type": "trait", "field": "a", "operator": "exists"},
                        {"type": "trait", "field": "b", "operator": "exists"},
                    ],
                }
            ],
        }
    )

    assert rule == Group(
        match="any", negate=True, rules=[trait("a", "exists"), trait("b", "exists")]
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "match": "all",
                "rules": [{"type": "trait", "field": "x", "operator": "gt", "value": True}],
            },
            "gt needs",
        ),
        ({"match": "all", "rules": [{"type": "bogus"}]}, "bogus"),
        (
            {"match": "all", "rules": [{"type": "trait", "field": "x", "operator": "is"}]},
            "needs a value",
        ),
        ({"match": "all", "rules": [], "extra": 1}, "extra"),
        (
            {
                "match": "all",
                "rules": [{"type": "event", "event": "e", "window": {"last": "7 days"}}],
            },
            "duration",
        ),
        ({"match": "all", "rules": [{"type": "intent", "topics": ["t"], "days": 30}]}, "14"),
        ({"match": "all", "rules": [{"type": "audience", "member": True}]}, "audience_id"),
    ],
)
def test_rule_from_filter__invalid__raises_invalid_rule(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_filter(data)

    assert caught.value.code == "invalid_rule"
    assert message in caught.value.message + str(caught.value.details)


def test_rule_from_filters__seed_004_example__is_an_and() -> None:
    rule = rule_from_filters(
        [
            {"field": "country", "operator": "is", "value": "US"},
            {"field": "event_count", "operator": "gte", "value": 50, "conjunction": "and"},
        ]
    )

    assert rule == Group(rules=[trait("country", "is", "US"), trait("event_count", "gte", 50)])


def test_rule_from_filters__mixed_conjunctions__and_binds_tighter_than_or() -> None:
    a, b, c, d = (trait(name, "exists") for name in "abcd")

    rule = rule_from_filters(
        [
            {"field": "a", "operator": "exists", "value": True},
            {"field": "b", "operator": "exists", "value": True},
            {"field": "c", "operator": "exists", "value": True, "conjunction": "or"},
            {"field": "d", "operator": "exists", "value": True, "conjunction": "AND"},
        ]
    )

    assert rule == Group(match="any", rules=[Group(rules=[a, b]), Group(rules=[c, d])])


def test_rule_from_filters__single_filter_branches__are_not_wrapped() -> None:
    a, b = (trait(name, "exists") for name in "ab")

    rule = rule_from_filters(
        [
            {"field": "a", "operator": "exists"},
            {"field": "b", "operator": "exists", "conjunction": "or"},
        ]
    )

    assert rule == Group(match="any", rules=[a, b])


def test_rule_from_filters__string_encoded_values__are_decoded_as_seed_004_stores_them() -> None:
    rule = rule_from_filters(
        [
            {"field": "event_count", "operator": "gte", "value": "50"},
            {"field": "country", "operator": "in", "value": '["US", "CA"]'},
            {"field": "plan", "operator": "is", "value": "50"},
        ]
    )

    assert rule == Group(
        rules=[
            trait("event_count", "gte", 50),
            trait("country", "in", ["US", "CA"]),
            trait("plan", "is", "50"),
        ]
    )


def test_rule_from_filters__exists_false__means_not_exists() -> None:
    rule = rule_from_filters([{"field": "email", "operator": "exists", "value": False}])

    assert rule == Group(rules=[trait("email", "not_exists")])


def test_rule_from_filters__empty__matches_everyone() -> None:
    assert rule_from_filters([]) == Group()


@pytest.mark.parametrize(
    "items",
    [
        [{"field": "name", "operator": "starts_with", "value": "A"}],
        [{"field": "a", "operator": "is", "value": 1, "conjunction": "xor"}],
        [{"field": "a", "operator": "is", "value": 1, "negate": True}],
        [{"field": "", "operator": "is", "value": 1}],
        ["country is US"],
    ],
)
def test_rule_from_filters__outside_seed_004__raises_invalid_rule(items: list[Any]) -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_filters(items)

    assert caught.value.code == "invalid_rule"


def test_rule_from_properties__and_across_or_within() -> None:
    rule = rule_from_properties({"plan": ["premium", "pro"], "country": ["US"]})

    assert rule == Group(
        rules=[trait("plan", "in", ["premium", "pro"]), trait("country", "is", "US")]
    )


def test_rule_from_properties__empty_mapping__matches_everyone() -> None:
    assert rule_from_properties({}) == Group()


def test_rule_from_properties__attribute_without_values__is_invalid() -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_properties({"plan": []})

    assert caught.value.code == "invalid_rule"
    assert caught.value.details == {"attribute": "plan"}
