"""Against the real store: the MongoDB filter selects exactly the profiles the predicate matches."""

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from audience_shared.adapters.mongo_rules import compile_mongo_filter
from audience_shared.rules import Group, compile_predicate, render_criteria
from tests.unit.rules.golden import load_golden_cases
from tests.unit.rules.strategies import NOW, profiles, rule_batches, trait_batches

pytestmark = pytest.mark.integration

Profiles = AsyncCollection[dict[str, Any]]
PROJECT = "proj_rules"


@pytest.fixture(scope="module")
async def profiles_collection(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> AsyncIterator[Profiles]:
    collection = mongo_client["audiences_rules_agreement"][f"profiles_{uuid4().hex[:8]}"]
    yield collection
    await collection.drop()


async def store_matches(collection: Profiles, rule: Group) -> set[str]:
    query = {"$and": [{"project_id": PROJECT}, compile_mongo_filter(rule, NOW)]}
    return {document["user_id"] async for document in collection.find(query, {"user_id": 1})}


async def assert_store_agrees(
    collection: Profiles, rules: list[Group], generated: list[dict[str, Any]]
) -> None:
    documents = [
        {"_id": f"{PROJECT}/u{index}", "project_id": PROJECT, "user_id": f"u{index}", **profile}
        for index, profile in enumerate(generated)
    ]
    await collection.delete_many({})
    await collection.insert_many(documents)

    for rule in rules:
        predicate = compile_predicate(rule)
        expected = {
            document["user_id"]
            for document in documents
            if predicate.evaluate(document, NOW).matched
        }

        assert await store_matches(collection, rule) == expected, render_criteria(rule)


AGREEMENT = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@AGREEMENT
@given(data=st.data())
async def test_mongo_filter__trait_conditions__select_what_the_predicate_matches(
    profiles_collection: Profiles, data: st.DataObject
) -> None:
    rules = data.draw(trait_batches, label="rules")
    # Profiles are built around the rules' fields and values: equal, beside, other kinds, lists.
    generated = data.draw(
        st.lists(profiles(Group(rules=list(rules))), min_size=1, max_size=12), label="profiles"
    )

    await assert_store_agrees(profiles_collection, rules, generated)


@AGREEMENT
@given(data=st.data())
async def test_mongo_filter__generated_rules_and_profiles__select_what_the_predicate_matches(
    profiles_collection: Profiles, data: st.DataObject
) -> None:
    rules = data.draw(rule_batches, label="rules")
    # Profiles carry the counters of every rule so that counter conditions can match.
    generated = data.draw(
        st.lists(profiles(Group(rules=list(rules))), min_size=1, max_size=12), label="profiles"
    )

    await assert_store_agrees(profiles_collection, rules, generated)


async def test_mongo_filter__golden_cases__give_the_recorded_answers(
    profiles_collection: Profiles,
) -> None:
    cases = load_golden_cases()
    await profiles_collection.delete_many({})
    await profiles_collection.insert_many(
        [
            {
                "_id": f"golden/{index}",
                "project_id": "golden",
                "user_id": str(index),
                **case.profile,
            }
            for index, case in enumerate(cases)
        ]
    )

    disagreements = []
    for index, case in enumerate(cases):
        query = {"$and": [{"_id": f"golden/{index}"}, compile_mongo_filter(case.rule, case.now)]}
        matched = await profiles_collection.count_documents(query) == 1
        if matched is not case.matched:
            disagreements.append(case.id)

    assert disagreements == []
