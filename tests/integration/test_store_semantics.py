"""What the services rely on from the store, checked against the real one under concurrency."""

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne
from pymongo.errors import WriteError

pytestmark = pytest.mark.integration

CLIENTS = 4
ROUNDS = 60


async def test_concurrent_increments__none_lost(mongo_url: str) -> None:
    """A single-document update is atomic: increments from several connections all count."""
    name = f"store_semantics_{secrets.token_hex(4)}"
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(mongo_url) for _ in range(CLIENTS)
    ]
    try:
        await clients[0][name].counters.insert_one({"_id": "c", "n": 0, "touched": []})

        async def bump(client: AsyncMongoClient[dict[str, Any]], who: int) -> None:
            for i in range(ROUNDS):
                await client[name].counters.update_one(
                    {"_id": "c"}, {"$inc": {"n": 1}, "$push": {"touched": f"{who}-{i}"}}
                )

        await asyncio.gather(*(bump(c, n) for n, c in enumerate(clients)))
        doc = await clients[0][name].counters.find_one({"_id": "c"})
        assert doc is not None
        assert doc["n"] == CLIENTS * ROUNDS
        assert len(doc["touched"]) == CLIENTS * ROUNDS
    finally:
        await clients[0].drop_database(name)
        for client in clients:
            await client.close()


@pytest.mark.parametrize("write", ["operators", "replacement"])
async def test_version_guarded_writes__exactly_one_winner_per_version(
    mongo_url: str, write: str
) -> None:
    """Writers racing on the same version: one matches, the others see a conflict (both for
    update operators and for a whole replacing document, which FerretDB as we build it writes
    in one guarded statement)."""
    name = f"store_semantics_{secrets.token_hex(4)}"
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(mongo_url) for _ in range(CLIENTS)
    ]
    try:
        await clients[0][name].profiles.insert_one({"_id": "p", "version": 0, "wins": []})
        wins: list[int] = []

        async def writer(client: AsyncMongoClient[dict[str, Any]], who: int) -> None:
            for _ in range(ROUNDS):
                current = await client[name].profiles.find_one({"_id": "p"})
                assert current is not None
                version = current["version"]
                guard = {"_id": "p", "version": version}
                op: UpdateOne | ReplaceOne[dict[str, Any]] = (
                    UpdateOne(guard, {"$set": {"version": version + 1}, "$push": {"wins": who}})
                    if write == "operators"
                    else ReplaceOne(
                        guard, {**current, "version": version + 1, "wins": [*current["wins"], who]}
                    )
                )
                result = await client[name].profiles.bulk_write([op], ordered=False)
                if result.matched_count:
                    wins.append(version)

        await asyncio.gather(*(writer(c, n) for n, c in enumerate(clients)))
        doc = await clients[0][name].profiles.find_one({"_id": "p"})
        assert doc is not None
        # Every successful guarded write moved the version by exactly one; none was lost.
        assert sorted(wins) == list(range(doc["version"]))
        assert len(doc["wins"]) == doc["version"]
    finally:
        await clients[0].drop_database(name)
        for client in clients:
            await client.close()


async def test_guarded_replace__matches_only_the_current_version_and_keeps_the_id(
    mongo_url: str,
) -> None:
    name = f"store_semantics_{secrets.token_hex(4)}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    profiles = client[name].profiles
    try:
        await profiles.insert_many(
            [{"_id": "p", "version": 2, "a": 1}, {"_id": "q", "version": "v2", "a": 1}]
        )
        stale = await profiles.replace_one({"_id": "p", "version": 1}, {"version": 9})
        current = await profiles.replace_one({"_id": "p", "version": 2}, {"version": 3, "b": 2})
        by_text = await profiles.replace_one({"_id": "q", "version": "v2"}, {"version": "v3"})
        wrong_type = await profiles.replace_one({"_id": "q", "version": 3}, {"version": "x"})
        missing = await profiles.replace_one({"_id": "nobody", "version": 2}, {"version": 3})
        assert (stale.matched_count, current.matched_count) == (0, 1)
        assert (by_text.matched_count, wrong_type.matched_count, missing.matched_count) == (1, 0, 0)
        assert await profiles.find_one({"_id": "p"}) == {"_id": "p", "version": 3, "b": 2}
        assert await profiles.find_one({"_id": "q"}) == {"_id": "q", "version": "v3"}
        assert await profiles.count_documents({}) == 2
        with pytest.raises(WriteError):
            await profiles.replace_one({"_id": "p", "version": 3}, {"_id": "other", "version": 4})
        assert await profiles.find_one({"_id": "p"}) == {"_id": "p", "version": 3, "b": 2}
    finally:
        await client.drop_database(name)
        await client.close()


async def test_date_range_queries__match_dates_only_and_any_array_element(mongo_url: str) -> None:
    """FerretDB as we build it skips rows in SQL for a date bound; results stay MongoDB's."""
    name = f"store_semantics_{secrets.token_hex(4)}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    docs = client[name].docs
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    past, future = now - timedelta(days=1), now + timedelta(days=1)
    try:
        await docs.insert_many(
            [
                {"_id": "past", "at": past},
                {"_id": "future", "at": future},
                {"_id": "now", "at": now},
                {"_id": "null", "at": None},
                {"_id": "missing"},
                {"_id": "both", "at": [future, past]},
                {"_id": "number", "at": 5},
                {"_id": "text", "at": "2026-12-01"},
            ]
        )

        async def ids(query: dict[str, Any]) -> set[str]:
            return {doc["_id"] async for doc in docs.find({"at": query}, {"_id": 1})}

        assert await ids({"$lte": now}) == {"past", "now", "both"}
        assert await ids({"$lt": now}) == {"past", "both"}
        assert await ids({"$gt": now}) == {"future", "both"}
        assert await ids({"$gte": now, "$lte": now}) == {"now", "both"}
        assert await docs.count_documents({"at": {"$lte": now}}) == 3
    finally:
        await client.drop_database(name)
        await client.close()


async def test_deletes_by_id__exactly_the_named_documents(mongo_url: str) -> None:
    """FerretDB as we build it deletes `{_id: "…"}` and `{_id: {$in: ["…"]}}` by its _id column,
    without reading the documents; what goes is what MongoDB deletes."""
    name = f"store_semantics_{secrets.token_hex(4)}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    docs = client[name].docs
    try:
        await docs.insert_many(
            [{"_id": f"m{n}", "n": n} for n in range(8)] + [{"_id": 5, "n": "int"}]
        )
        many = await docs.delete_many({"_id": {"$in": ["m0", "m1", "m1", "nobody"]}})
        one_id = await docs.delete_many({"_id": "m2"})
        first_of_two = await docs.delete_one({"_id": {"$in": ["m3", "m4"]}})
        # Not by string ids only: the query path, as before.
        mixed = await docs.delete_many({"_id": {"$in": [5, "m5"]}})
        by_number = await docs.delete_many({"_id": {"$in": ["5"]}})
        with_more = await docs.delete_many({"_id": {"$in": ["m6"]}, "n": 99})
        counts = (many, one_id, first_of_two, mixed, by_number, with_more)
        assert [result.deleted_count for result in counts] == [2, 1, 1, 2, 0, 0]
        left = {doc["_id"] async for doc in docs.find({}, {"_id": 1})}
        assert len(left & {"m3", "m4"}) == 1
        assert left - {"m3", "m4"} == {"m6", "m7"}
    finally:
        await client.drop_database(name)
        await client.close()
