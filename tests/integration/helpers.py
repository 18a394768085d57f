"""Helpers for integration tests: producing raw records, waiting for counts, reading topics."""

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from audience_shared.topics import Topic

if TYPE_CHECKING:
    from tests.integration.conftest import Stack


async def produce(
    bootstrap: str, records: list[tuple[bytes, bytes]], topic: str = Topic.USER_EVENTS
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def user_event(project_id: str, user_id: str, **fields: Any) -> tuple[bytes, bytes]:
    body = {"project_id": project_id, "user_id": user_id, **fields}
    return f"{project_id}/{user_id}".encode(), json.dumps(body).encode()


async def wait_for_count(
    client: httpx.AsyncClient, audience_id: str, expected: int, timeout: float = 20
) -> float:
    started = time.monotonic()
    count = None
    while time.monotonic() - started < timeout:
        response = await client.get(f"/v1/audiences/{audience_id}/count")
        assert response.status_code == 200, response.text
        count = response.json()["count"]
        if count == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"count of {audience_id} stayed {count}, expected {expected}")


async def wait_ready(
    client: httpx.AsyncClient, audience_id: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(f"/v1/audiences/{audience_id}")).json()
        if body["status"] == "ready":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"audience {audience_id} not ready: {body}")


async def read_topic(
    bootstrap: str, topic: str, predicate: Any, expected: int, timeout: float = 20
) -> list[dict[str, Any]]:
    """Read from the start of a topic until `expected` values satisfy the predicate."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < expected:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    value = json.loads(record.value)
                    if predicate(value):
                        found.append(value)
    finally:
        await consumer.stop()
    return found


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The status, and the one error shape with the expected code."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) >= {"code", "message", "details"}
    return error  # type: ignore[no-any-return]


async def new_project_key(stack: "Stack", **key_fields: Any) -> tuple[str, str]:
    """A fresh project and a key for it (key fields such as scope or rate_limit as given)."""
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.admin_key}"}
    ) as admin:
        project = (await admin.post("/v1/projects", json={"name": "p"})).json()
        created = await admin.post("/v1/keys", json={"project_id": project["id"], **key_fields})
        assert created.status_code == 201, created.text
        return project["id"], created.json()["key"]


async def identified(client: httpx.AsyncClient, users: dict[str, dict[str, Any]]) -> None:
    """Identify users and wait until the evaluator has folded every one into a profile."""
    batch = [{"user_id": uid, "traits": traits} for uid, traits in users.items()]
    assert (await client.post("/v1/identify", json={"batch": batch})).status_code == 202
    for uid, traits in users.items():
        for _ in range(200):
            found = await client.get(f"/v1/users/{uid}")
            if found.status_code == 200 and all(
                found.json()["traits"].get(k) == v for k, v in traits.items()
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"user {uid} never got traits {traits}")
