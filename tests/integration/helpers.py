"""Helpers for integration tests: producing raw records, waiting for counts, reading topics."""

import asyncio
import json
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from audience_shared.topics import Topic


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
        body = (await client.get(f"/v1/audiences/{audience_id}")).json()
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
