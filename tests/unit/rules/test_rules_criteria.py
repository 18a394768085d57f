"""The criteria language: seed meanings, the rest of the syntax, errors and the round trip."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from audience_shared.rules import (
    AudienceCondition,
    EventCondition,
    Group,
    IntentCondition,
    RuleError,
    TraitCondition,
    parse_criteria,
    render_criteria,
    rule_from_filter,
)
from audience_shared.rules.model import AbsoluteWindow, CountClause, RelativeWindow
from tests.unit.rules.strategies import narrow_rules, wide_rules


def trait(field: str, operator: str, value: Any = None) -> TraitCondition:
    return TraitCondition.model_validate({"field": field, "operator": operator, "value": value})


SEED_EXAMPLES = [
    (
        "Users with plan=premium AND last_active within 7 days",
        Group(rules=[trait("plan", "is", "premium"), trait("last_active", "within_last", "7d")]),
    ),
    (
        "Users who completed purchase in the last 30 days",
        Group(rules=[EventCondition(event="purchase", window=RelativeWindow(last="30d"))]),
    ),
    (
        "Users with email AND NOT subscribed to newsletter",
        Group(
            rules=[
                trait("email", "exists"),
                Group(negate=True, rules=[trait("subscriptions", "contains", "newsletter")]),
            ]
        ),
    ),
    (
        "Users from country=US AND plan=premium",
        Group(rules=[trait("country", "is", "US"), trait("plan", "is", "premium")]),
    ),
    (
        "Users who triggered event=app_open more than 10 times",
        Group(
            rules=[
                EventCondition(
                    event="app_open",
                    count=CountClause.model_validate({"operator": "gt", "value": 10}),
                )
            ]
        ),
    ),
    (
        "Users with signup_date before 2024-01-01",
        Group(rules=[trait("signup_date", "before", datetime(2024, 1, 1, tzinfo=UTC))]),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), SEED_EXAMPLES, ids=[text for text, _ in SEED_EXAMPLES]
)
def test_parse_criteria__seed_example__has_the_specified_meaning(
    text: str, expected: Group
) -> None:
    assert parse_criteria(text) == expected


@pytest.mark.parametrize(("text", "_"), SEED_EXAMPLES, ids=[text for text, _ in SEED_EXAMPLES])
def test_render_criteria__seed_example__parses_back(text: str, _: Group) -> None:
    rule = parse_criteria(text)

    assert parse_criteria(render_criteria(rule)) == rule


SYNTAX = [
    ("Users with plan != free", [trait("plan", "is_not", "free")]),
    ("Users with plan is not free", [trait("plan", "is_not", "free")]),
    ("Users with plan is free", [trait("plan", "is", "free")]),
    ("Users with age > 18", [trait("age", "gt", 18)]),
    ("Users with age >= 18.5", [trait("age", "gte", 18.5)]),
    ("Users with age < -3", [trait("age", "lt", -3)]),
    ("Users with age <= 1e3", [trait("age", "lte", 1000.0)]),
    (
        "Users with country in (US, CA, 'Great Britain')",
        [trait("country", "in", ["US", "CA", "Great Britain"])],
    ),
    ("Users with country not in (CN)", [trait("country", "not_in", ["CN"])]),
    ('Users with name = "Ann Lee"', [trait("name", "is", "Ann Lee")]),
    ('Users with name = "say \\"hi\\""', [trait("name", "is", 'say "hi"')]),
    ("Users with verified = true", [trait("verified", "is", True)]),
    ("Users with email contains gmail", [trait("email", "contains", "gmail")]),
    ("Users with email does not contain gmail", [trait("email", "not_contains", "gmail")]),
    ("Users with name starts with Jo", [trait("name", "starts_with", "Jo")]),
    ("Users with email ends with '.com'", [trait("email", "ends_with", ".com")]),
    ("Users with age between 18 and 30", [trait("age", "between", [18, 30])]),
    (
        "Users with renewal after 2024-03-01T10:30:00Z",
        [trait("renewal", "after", datetime(2024, 3, 1, 10, 30, tzinfo=UTC))],
    ),
    ("Users with email is set", [trait("email", "exists")]),
    ("Users with email does not exist", [trait("email", "not_exists")]),
    ("Users with email is not set", [trait("email", "not_exists")]),
    ("Users with last_seen within the last 12 hours", [trait("last_seen", "within_last", "12h")]),
    ("Users with last_seen not within 2w", [trait("last_seen", "not_within_last", "2w")]),
    ("Users with metadata.tier = gold", [trait("metadata.tier", "is", "gold")]),
    ("Users with `first name` = Ann", [trait("first name", "is", "Ann")]),
    (
        "Users who performed purchase at least 3 times in the last 24 hours",
        [
            EventCondition(
                event="purchase",
                count=CountClause.model_validate({"operator": "gte", "value": 3}),
                window=RelativeWindow(last="24h"),
            )
        ],
    ),
    (
        "Users who made purchase between 2024-01-01 and 2024-02-01",
        [
            EventCondition(
                event="purchase",
                window=AbsoluteWindow(
                    from_=datetime(2024, 1, 1, tzinfo=UTC), to=datetime(2024, 2, 1, tzinfo=UTC)
                ),
            )
        ],
    ),
    (
        'Users who did not perform "Order Completed" in the last 2 weeks',
        [
            EventCondition(
                event="Order Completed", performed=False, window=RelativeWindow(last="2w")
            )
        ],
    ),
    ("Users who did not purchase", [EventCondition(event="purchase", performed=False)]),
    ("Users who never triggered app_open", [EventCondition(event="app_open", performed=False)]),
    (
        "Users who performed purchase where (amount > 100 AND currency = EUR) at most 2 times",
        [
            EventCondition(
                event="purchase",
                where=[trait("amount", "gt", 100), trait("currency", "is", "EUR")],
                count=CountClause.model_validate({"operator": "lte", "value": 2}),
            )
        ],
    ),
    (
        "Users who performed purchase where amount > 100 exactly 1 time",
        [
            EventCondition(
                event="purchase",
                where=[trait("amount", "gt", 100)],
                count=CountClause.model_validate({"operator": "eq", "value": 1}),
            )
        ],
    ),
    (
        "Users who performed purchase fewer than 2 times",
        [
            EventCondition(
                event="purchase", count=CountClause.model_validate({"operator": "lt", "value": 2})
            )
        ],
    ),
    (
        'Users in audience "Active Premium Users"',
        [AudienceCondition(audience_name="Active Premium Users")],
    ),
    ("Users not in audience id aud_789", [AudienceCondition(audience_id="aud_789", member=False)]),
    (
        'Users with intent in (running, "trail shoes") score >= 0.5 in the last 7 days',
        [IntentCondition(topics=["running", "trail shoes"], min_score=0.5, days=7)],
    ),
    ("Users with intent running", [IntentCondition(topics=["running"])]),
]


@pytest.mark.parametrize(("text", "rules"), SYNTAX, ids=[text for text, _ in SYNTAX])
def test_parse_criteria__syntax__gives_the_canonical_rule(text: str, rules: list[Any]) -> None:
    assert parse_criteria(text) == Group(rules=rules)


def test_parse_criteria__audience_by_name__leaves_the_id_for_the_api() -> None:
    rule = parse_criteria('Users in audience "VIP"')

    assert rule.rules == [AudienceCondition(audience_id=None, audience_name="VIP", member=True)]
    assert render_criteria(rule) == 'Users in audience "VIP"'


def test_parse_criteria__keywords__are_case_insensitive() -> None:
    lower = parse_criteria("users with plan=premium and last_active within 7 days")
    shouting = parse_criteria("USERS WITH plan=premium AND last_active WITHIN 7 DAYS")
    mixed = parse_criteria("Users With plan Is premium anD last_active wiThin 7 Days")

    assert lower == shouting == mixed == SEED_EXAMPLES[0][1]


def test_parse_criteria__precedence__not_over_and_over_or() -> None:
    a, b, c = (trait(name, "is", 1) for name in "abc")

    rule = parse_criteria("Users with a = 1 OR b = 1 AND NOT c = 1")

    assert rule == Group(match="any", rules=[a, Group(rules=[b, Group(negate=True, rules=[c])])])


def test_parse_criteria__parentheses__override_precedence() -> None:
    a, b, c = (trait(name, "is", 1) for name in "abc")

    rule = parse_criteria("Users with (a = 1 OR b = 1) AND c = 1")

    assert rule == Group(rules=[Group(match="any", rules=[a, b]), c])


def test_parse_criteria__not_around_group__negates_the_group() -> None:
    a, b = (trait(name, "is", 1) for name in "ab")

    assert parse_criteria("Users NOT (a = 1 OR b = 1)") == Group(
        match="any", negate=True, rules=[a, b]
    )
    assert parse_criteria("Users with NOT NOT a = 1") == Group(rules=[a])


def test_parse_criteria__users_alone__is_everyone() -> None:
    assert parse_criteria("Users") == Group()


def test_parse_criteria__keyword_prefixed_names__stay_names() -> None:
    rule = parse_criteria("Users with insurance = yes AND in_stock = true AND notes exists")

    assert rule == Group(
        rules=[
            trait("insurance", "is", "yes"),
            trait("in_stock", "is", True),
            trait("notes", "exists"),
        ]
    )


ERRORS = [
    ("Users with plan = ", 18, "quoted string"),
    ("Users with plan premium", 17, "="),
    ("Users who performed", 20, "name"),
    ("Users with (a = 1", 18, ")"),
    # Keywords are only reserved where they mean something, so the second AND reads as a field.
    ("Users with a = 1 AND AND b = 2", 26, "="),
    ("Users with a = 1 OR", 20, "with"),
    ("Users with plan = % premium", 19, "value"),
    ("Users who performed purchase at 3 times", 33, "least"),
]


@pytest.mark.parametrize(
    ("text", "position", "expected"), ERRORS, ids=[text for text, _, _ in ERRORS]
)
def test_parse_criteria__syntax_error__reports_position_and_expected(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(RuleError) as caught:
        parse_criteria(text)

    assert caught.value.code == "invalid_criteria"
    assert caught.value.position == position
    assert expected in caught.value.expected
    assert caught.value.to_dict()["position"] == position


SEMANTIC_ERRORS = [
    ("Users with signup_date before premium", 12, "date"),
    ("Users with age between 30 and 18", 12, "low <= high"),
    ("Users with x = 1 AND renewal after 2024-13-45", 36, "valid date"),
    ("Users with intent running in the last 3 hours", 27, "days"),
    ("Users with x.0 = 1", 12, "numeric segment"),
]


@pytest.mark.parametrize(
    ("text", "position", "message"), SEMANTIC_ERRORS, ids=[text for text, _, _ in SEMANTIC_ERRORS]
)
def test_parse_criteria__meaningless_condition__reports_where(
    text: str, position: int, message: str
) -> None:
    with pytest.raises(RuleError) as caught:
        parse_criteria(text)

    assert caught.value.code == "invalid_criteria"
    assert caught.value.position == position
    assert message in caught.value.message


def test_parse_criteria__blank__is_invalid() -> None:
    with pytest.raises(RuleError) as caught:
        parse_criteria("   ")

    assert caught.value.code == "invalid_criteria"


def test_parse_criteria__ten_groups_deep__is_accepted() -> None:
    text = "Users with " + "(a = 1 AND " * 10 + "b = 2" + ")" * 10

    parse_criteria(text)


def test_parse_criteria__nested_too_deep__is_rule_too_deep() -> None:
    text = "Users with " + "(a = 1 AND " * 11 + "b = 2" + ")" * 11

    with pytest.raises(RuleError) as caught:
        parse_criteria(text)

    assert caught.value.code == "rule_too_deep"


def test_render_criteria__every_condition_kind__reads_naturally() -> None:
    rule = rule_from_filter(
        {
            "match": "any",
            "rules": [
                {"type": "trait", "field": "plan", "operator": "in", "value": ["pro", "team plan"]},
                {
                    "type": "event",
                    "event": "purchase",
                    "performed": False,
                    "count": {"operator": "gte", "value": 2},
                    "window": {"last": "30d"},
                },
                {"type": "intent", "topics": ["running"], "min_score": 0.5, "days": 7},
                {"type": "audience", "audience_id": "aud_1", "member": False},
            ],
        }
    )

    assert render_criteria(rule) == (
        'Users with plan in (pro, "team plan") OR who did not perform purchase at least 2 times '
        "in the last 30 days OR intent running score >= 0.5 in the last 7 days "
        "OR not in audience id aud_1"
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_rules)
def test_render_criteria__any_valid_rule__parses_back_to_it(rule: Group) -> None:
    assert parse_criteria(render_criteria(rule)) == rule


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(narrow_rules)
def test_render_criteria__rules_with_dates_and_windows__parse_back(rule: Group) -> None:
    assert parse_criteria(render_criteria(rule)) == rule


def documented_examples() -> list[str]:
    docs = Path(__file__).resolve().parents[3] / "docs" / "criteria.md"
    section = docs.read_text().split("## More examples", 1)[1]
    block = section.split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("text", documented_examples())
def test_docs_criteria_examples__parse_and_round_trip(text: str) -> None:
    rule = parse_criteria(text)

    assert parse_criteria(render_criteria(rule)) == rule
