"""Evaluator under failure: kill -9 mid-stream, the store stopped, two processes sharing work."""

import asyncio
import os
import random
import secrets
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from audience_shared.counters import counter_ids
from tests.integration.conftest import ROOT, ServiceProcess, Stack, free_port
from tests.integration.helpers import produce, user_event, wait_for_count, wait_ready

pytestmark = pytest.mark.integration


def stream(
    project: str, users: int, events: int, seed: int
) -> tuple[list[tuple[bytes, bytes]], Counter[str]]:
    """A random app_open stream with unique event ids, and how many opens each user made."""
    rng = random.Random(seed)
    opens: Counter[str] = Counter()
    records = []
    for n in range(events):
        user = f"user-{rng.randrange(users)}"
        opens[user] += 1
        records.append(
            user_event(project, user, type="track", event="app_open", event_id=f"s{seed}-{n}")
        )
    return records, opens


async def create(client: httpx.AsyncClient, criteria: str) -> str:
    response = await client.post("/v1/audiences", json={"name": "A", "criteria": criteria})
    assert response.status_code == 201, response.text
    await wait_ready(client, response.json()["id"])
    return str(response.json()["id"])


async def test_kill_9_mid_stream__restart__memberships_equal_oracle(
    project_client: httpx.AsyncClient, stack: Stack, kafka_bootstrap: str
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    audience = await create(project_client, "Users who triggered event=app_open at least 5 times")
    records, opens = stream(project, users=300, events=6000, seed=1)
    evaluator = stack.services["evaluator"]
    producing = asyncio.create_task(produce(kafka_bootstrap, records))
    await asyncio.sleep(0.5)
    evaluator.kill()
    await producing
    await asyncio.sleep(0.5)
    evaluator.start()
    expected = sum(1 for n in opens.values() if n >= 5)
    await wait_for_count(project_client, audience, expected, timeout=150)
    members = await member_ids(stack, audience)
    assert members == {user for user, n in opens.items() if n >= 5}


async def member_ids(stack: Stack, audience_id: str) -> set[str]:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.env["AUDIENCES_MONGO_URL"])
    try:
        docs = client[stack.database].profiles.find({"audiences": audience_id})
        return {str(doc["user_id"]) async for doc in docs}
    finally:
        await client.close()


async def test_two_evaluators__share_partitions__nothing_lost(
    project_client: httpx.AsyncClient, stack: Stack, kafka_bootstrap: str
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    audience = await create(project_client, "Users who triggered event=app_open at least 3 times")
    second = ServiceProcess("evaluator-2", free_port(), stack.env)
    second.start()
    try:
        records, opens = stream(project, users=200, events=3000, seed=2)
        producing = asyncio.create_task(produce(kafka_bootstrap, records))
        await asyncio.sleep(1.0)
        second.kill()  # a rebalance mid-stream hands its partitions back
        await producing
        expected = {user for user, n in opens.items() if n >= 3}
        await wait_for_count(project_client, audience, len(expected), timeout=150)
        assert await member_ids(stack, audience) == expected
        # Both counted in slots of their own (the audience was built empty, before any event).
        slots = await slot_counts(stack, audience)
        assert sum(slots.values()) == len(expected), slots
    finally:
        second.stop()


async def slot_counts(stack: Stack, audience_id: str) -> dict[str, int]:
    """Member counts of the audience's slot documents (not its base), by `_id`."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.env["AUDIENCES_MONGO_URL"])
    try:
        docs = client[stack.database].audience_counts.find(
            {"_id": {"$in": counter_ids(audience_id)[1:]}}
        )
        return {str(doc["_id"]): int(str(doc["member_count"])) async for doc in docs}
    finally:
        await client.close()


async def test_store_stopped_10s_mid_stream__evaluator_recovers_by_itself(
    stack: Stack, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A store of this test's own is stopped for 10 s while events flow; nothing is lost.

    The session's evaluator is paused meanwhile and this test's evaluator takes its consumer
    group, so it reads only this test's events (the session's store is not the one stopped).
    """
    port = free_port()
    env_store = {
        "AUDIENCES_LOCAL_DIR": str(tmp_path / "local"),
        "AUDIENCES_CACHE_DIR": str(ROOT / ".local" / "cache"),
        "AUDIENCES_STORE_PORT": str(port),
        "PATH": os.environ["PATH"],
    }
    store_script = str(ROOT / "deploy" / "local" / "store.sh")
    subprocess.run([store_script, "start"], env=env_store, check=True, capture_output=True)
    admin_key = f"sk_test_{secrets.token_hex(8)}"
    env = {
        **stack.env,
        "AUDIENCES_MONGO_URL": f"mongodb://127.0.0.1:{port}/",
        "AUDIENCES_MONGO_DATABASE": "outage",
        "AUDIENCES_BOOTSTRAP_API_KEY": admin_key,
    }
    session_evaluator = stack.services["evaluator"]
    session_evaluator.stop()
    services = [
        ServiceProcess("evaluator-outage", free_port(), env),
        ServiceProcess("api-outage", free_port(), env),
    ]
    try:
        for service in services:
            service.start()
        api = f"http://127.0.0.1:{services[1].port}"
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as admin:
            project = (await admin.post("/v1/projects", json={"name": "outage"})).json()["id"]
            key = (await admin.post("/v1/keys", json={"project_id": project})).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:
            audience = await create(client, "Users who triggered event=app_open at least 4 times")
            records, opens = stream(project, users=100, events=3000, seed=3)
            await produce(kafka_bootstrap, records[:1000])
            subprocess.run([store_script, "stop"], env=env_store, check=True, capture_output=True)
            stopped = time.monotonic()
            await produce(kafka_bootstrap, records[1000:])
            await asyncio.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
            subprocess.run([store_script, "start"], env=env_store, check=True, capture_output=True)
            expected = {user for user, n in opens.items() if n >= 4}
            await wait_for_count(client, audience, len(expected), timeout=120)
    finally:
        for service in services:
            service.stop()
        subprocess.run([store_script, "stop"], env=env_store, check=False, capture_output=True)
        session_evaluator.start()
