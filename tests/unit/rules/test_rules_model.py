"""The canonical model's JSON and the limits `validate_rule` enforces."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from audience_shared.rules import Group, RuleError, TraitCondition, rule_from_filter, validate_rule


def trait(field: str, operator: str, value: Any = None) -> TraitCondition:
    return TraitCondition.model_validate({"field": field, "operator": operator, "value": value})


def test_model_dump__every_condition__is_the_documented_json() -> None:
    documented = {
        "match": "all",
        "negate": False,
        "rules": [
            {"type": "trait", "field": "country", "operator": "is", "value": "US"},
            {
                "type": "trait",
                "field": "signup_date",
                "operator": "before",
                "value": "2024-01-01T00:00:00Z",
            },
            {
                "type": "event",
                "event": "purchase",
                "performed": True,
                "count": {"operator": "gte", "value": 1},
                "window": {"last": "30d"},
                "where": [{"type": "trait", "field": "amount", "operator": "gt", "value": 100}],
            },
            {
                "type": "event",
                "event": "refund",
                "performed": False,
                "count": None,
                "window": {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"},
                "where": [],
            },
            {"type": "intent", "topics": ["running"], "min_score": 0.5, "days": 7},
            {"type": "audience", "audience_id": "aud_1", "audience_name": None, "member": True},
            {
                "match": "any",
                "negate": True,
                "rules": [
                    {"type": "trait", "field": "a", "operator": "exists", "value": None},
                    {"type": "trait", "field": "b", "operator": "within_last", "value": "7d"},
                ],
            },
        ],
    }

    rule = rule_from_filter(documented)

    assert rule.model_dump(mode="json") == documented
    assert Group.model_validate_json(rule.model_dump_json()) == rule


def test_trait_values__iso_strings__become_utc_datetimes() -> None:
    condition = trait("signup_date", "after", "2024-01-01T02:00:00+02:00")

    assert condition.value == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("is", None),
        ("is", [1, 2]),
        ("is", {"a": 1}),
        ("in", []),
        ("between", [1]),
        ("between", [1, "b"]),
        ("between", [2, 1]),
        ("gt", True),
        ("starts_with", 3),
        ("before", "soon"),
        ("within_last", "7 days"),
        ("exists", "yes"),
        ("is", float("inf")),
        ("is", 2**64),
    ],
)
def test_trait_condition__value_not_fitting_operator__is_rejected(
    operator: str, value: Any
) -> None:
    with pytest.raises(ValidationError):
        trait("field", operator, value)


@pytest.mark.parametrize("field", ["", "a..b", "a.$b", "items.0.sku", "a`b"])
def test_trait_condition__bad_field_path__is_rejected(field: str) -> None:
    with pytest.raises(ValidationError):
        trait(field, "exists")


def nested(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": "trait", "field": "x", "operator": "exists"}
    for _ in range(depth):
        rule = {
            "match": "all",
            "rules": [rule, {"type": "trait", "field": "y", "operator": "exists"}],
        }
    return rule


def test_validate_rule__depth_10__is_accepted() -> None:
    validate_rule(rule_from_filter(nested(10)))


def test_validate_rule__depth_11__is_rule_too_deep() -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_filter(nested(11))

    assert caught.value.code == "rule_too_deep"


def test_rule_from_filter__absurdly_deep_json__is_rule_too_deep() -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_filter(nested(3000))

    assert caught.value.code == "rule_too_deep"


def conditions(count: int) -> dict[str, Any]:
    return {
        "rules": [{"type": "trait", "field": f"f{i}", "operator": "exists"} for i in range(count)]
    }


def test_validate_rule__200_conditions__is_accepted() -> None:
    rule_from_filter(conditions(200))


def test_validate_rule__201_conditions__is_too_many() -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_filter(conditions(201))

    assert caught.value.code == "too_many_conditions"


def test_validate_rule__event_filters__count_as_conditions() -> None:
    where = [{"field": f"p{i}", "operator": "exists"} for i in range(10)]
    data = {"rules": [{"type": "event", "event": "e", "where": where} for _ in range(19)]}

    with pytest.raises(RuleError) as caught:
        rule_from_filter(data)

    assert caught.value.code == "too_many_conditions"


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        (
            {"type": "trait", "field": "x", "operator": "within_last", "value": "366d"},
            "window_too_long",
        ),
        ({"type": "event", "event": "e", "window": {"last": "53w"}}, "window_too_long"),
        (
            {
                "type": "event",
                "event": "e",
                "count": {"operator": "gte", "value": 1001},
                "window": {"last": "7d"},
            },
            "count_too_large",
        ),
        (
            {
                "type": "event",
                "event": "e",
                "count": {"operator": "gt", "value": 1000},
                "window": {"last": "7d"},
            },
            "count_too_large",
        ),
        (
            {
                "type": "event",
                "event": "e",
                "count": {"operator": "eq", "value": 1000},
                "window": {"last": "7d"},
            },
            "count_too_large",
        ),
        (
            {
                "type": "event",
                "event": "e",
                "where": [{"field": "p", "operator": "within_last", "value": "1d"}],
            },
            "invalid_rule",
        ),
        ({"match": "any", "rules": []}, "invalid_rule"),
    ],
)
def test_validate_rule__beyond_limits__is_rejected(condition: dict[str, Any], code: str) -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_filter(
            {"rules": [condition, {"type": "trait", "field": "y", "operator": "exists"}]}
        )

    assert caught.value.code == code


@pytest.mark.parametrize(
    "condition",
    [
        {"type": "trait", "field": "x", "operator": "within_last", "value": "365d"},
        {"type": "event", "event": "e", "window": {"last": "52w"}},
        {
            "type": "event",
            "event": "e",
            "count": {"operator": "gte", "value": 1000},
            "window": {"last": "7d"},
        },
        {
            "type": "event",
            "event": "e",
            "count": {"operator": "lte", "value": 999},
            "window": {"last": "7d"},
        },
        {"type": "event", "event": "e", "count": {"operator": "gt", "value": 5000}},
    ],
)
def test_validate_rule__at_the_limits__is_accepted(condition: dict[str, Any]) -> None:
    rule_from_filter({"rules": [condition]})


def test_validate_rule__empty_any_root__is_rejected() -> None:
    with pytest.raises(RuleError):
        validate_rule(Group(match="any"))
