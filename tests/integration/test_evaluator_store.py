"""The evaluator's store adapters against the real store: cached profiles and shared counters."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from audience_evaluator.adapters.mongo import MongoMembershipStore, MongoProfileStore
from audience_shared.events import MembershipChanged

pytestmark = pytest.mark.integration


@pytest.fixture
async def db_name(mongo_url: str) -> AsyncIterator[str]:
    name = f"evaluator_store_{secrets.token_hex(4)}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    await client.drop_database(name)
    await client.close()


async def test_cached_profile__moved_on_by_another_process__conflicts_then_reads_the_store(
    mongo_url: str, db_name: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    mine, other = (MongoProfileStore(client[db_name], cache_size=10) for _ in range(2))
    try:
        assert await mine.commit_profiles([({"_id": "p/u", "version": 1, "n": 1}, 0)]) == set()
        cached = (await mine.load_profiles(["p/u"]))["p/u"]  # from this process's cache
        fresh = (await other.load_profiles(["p/u"]))["p/u"]
        assert await other.commit_profiles([({**fresh, "version": 2, "n": 2}, 1)]) == set()
        # The stale copy's write is refused, and the retry's read sees the other's write.
        assert await mine.commit_profiles([({**cached, "version": 2, "n": 9}, 1)]) == {"p/u"}
        assert (await mine.load_profiles(["p/u"]))["p/u"]["n"] == 2
    finally:
        await client.close()


def change(user: str, kind: str = "membership.entered") -> MembershipChanged:
    return MembershipChanged.model_validate(
        {"type": kind, "project_id": "p", "audience_id": "aud", "user_id": user, "version": 1}
    )


async def test_counters__two_processes_at_once_and_a_replay__each_change_counts_once(
    mongo_url: str, db_name: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    stores = [MongoMembershipStore(client[db_name]) for _ in range(2)]
    batches = [[change(f"u{n}-{i}") for i in range(20)] for n in range(10)]
    try:
        # Ten batches from two processes racing on one counter, each batch delivered twice.
        await asyncio.gather(
            *(stores[n % 2].count_changes(batch) for n, batch in enumerate(batches)),
            *(stores[(n + 1) % 2].count_changes(batch) for n, batch in enumerate(batches)),
        )
        await stores[0].count_changes([change("u0-0", "membership.exited")])
        assert await stores[1].member_count("aud") == 199
        counter = await client[db_name].audience_counts.find_one({"_id": "aud"})
        assert counter is not None
        assert (counter["entered_total"], counter["exited_total"]) == (200, 1)
    finally:
        await client.close()
