"""What the services rely on from the store, checked against the real one under concurrency."""

import asyncio
import secrets
from typing import Any

import pytest
from pymongo import AsyncMongoClient, UpdateOne

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


async def test_version_guarded_writes__exactly_one_winner_per_version(mongo_url: str) -> None:
    """Two writers racing on the same version: one matches, the other sees a conflict."""
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
                result = await client[name].profiles.bulk_write(
                    [
                        UpdateOne(
                            {"_id": "p", "version": version},
                            {"$set": {"version": version + 1}, "$push": {"wins": who}},
                        )
                    ],
                    ordered=False,
                )
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
