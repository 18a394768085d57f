"""The MongoDB filter's shape: FerretDB-safe operators only, literal regexes, fresh objects."""

import re
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_shared.adapters.mongo_rules import compile_mongo_filter, regex_literal
from audience_shared.rules import Group, parse_criteria
from tests.unit.rules.strategies import NOW, narrow_rules

FERRETDB_SAFE = {
    "$and", "$or", "$nor", "$not", "$eq", "$gt", "$gte", "$lt", "$lte", "$in", "$regex", "$type",
    "$elemMatch",
}  # fmt: skip


def operators(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {key for key in node if key.startswith("$")}
        for value in node.values():
            found |= operators(value)
        return found
    if isinstance(node, list):
        return set().union(*(operators(item) for item in node)) if node else set()
    return set()


def empty_logical_arrays(node: Any) -> int:
    if isinstance(node, dict):
        own = sum(1 for key in ("$and", "$or", "$nor") if node.get(key) == [])
        return own + sum(empty_logical_arrays(value) for value in node.values())
    if isinstance(node, list):
        return sum(empty_logical_arrays(item) for item in node)
    return 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(narrow_rules)
def test_compile_mongo_filter__any_rule__uses_only_ferretdb_safe_operators(rule: Group) -> None:
    compiled = compile_mongo_filter(rule, NOW)

    assert operators(compiled) <= FERRETDB_SAFE
    assert empty_logical_arrays(compiled) == 0


def test_compile_mongo_filter__seed_example__reads_like_the_rule() -> None:
    rule = parse_criteria("Users with plan=premium AND last_active within 7 days")
    since = NOW - timedelta(days=7)

    assert compile_mongo_filter(rule, NOW) == {
        "$and": [
            {"traits.plan": {"$eq": "premium"}},
            {
                "$or": [
                    {
                        "$and": [
                            {
                                "traits.last_active": {
                                    "$type": ["string", "number", "bool", "date", "object", "array"]
                                }
                            },
                            {"traits.last_active": {"$gte": since}},
                        ]
                    },
                    {
                        "$and": [
                            {
                                "$nor": [
                                    {
                                        "traits.last_active": {
                                            "$type": [
                                                "string",
                                                "number",
                                                "bool",
                                                "date",
                                                "object",
                                                "array",
                                            ]
                                        }
                                    }
                                ]
                            },
                            {"last_seen": {"$gte": since}},
                        ]
                    },
                ]
            },
        ]
    }


def test_compile_mongo_filter__windowed_count__reads_the_nth_newest_timestamp() -> None:
    rule = parse_criteria("Users who performed page.view at least 3 times in the last 2 days")

    assert compile_mongo_filter(rule, NOW) == {
        "events.page%2Eview.recent.2": {"$gte": NOW - timedelta(days=2)}
    }


def test_compile_mongo_filter__everyone__is_a_fresh_empty_filter() -> None:
    first = compile_mongo_filter(Group(), NOW)
    first["project_id"] = "p1"

    assert compile_mongo_filter(Group(), NOW) == {}
    assert compile_mongo_filter(parse_criteria("Users who performed x at least 0 times"), NOW) == {}


@given(st.text(), st.text())
def test_regex_literal__any_text__matches_itself_literally(needle: str, haystack: str) -> None:
    found = re.search(regex_literal(needle), haystack) is not None

    assert found == (needle in haystack)
