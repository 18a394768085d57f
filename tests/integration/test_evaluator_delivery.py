"""Evaluator delivery guarantees through the real broker and store: duplicates, order, poison."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from audience_shared.topics import Topic
from tests.integration.conftest import Stack
from tests.integration.helpers import produce, read_topic, user_event, wait_for_count, wait_ready

pytestmark = pytest.mark.integration


async def create(client: httpx.AsyncClient, name: str, criteria: str) -> str:
    response = await client.post("/v1/audiences", json={"name": name, "criteria": criteria})
    assert response.status_code == 201, response.text
    audience_id: str = response.json()["id"]
    await wait_ready(client, audience_id)
    return audience_id


async def test_duplicate_delivery__every_event_twice__counts_once(
    project_client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    audience = await create(
        project_client, "Openers", "Users who triggered event=app_open at least 3 times"
    )
    records = []
    for user in ("a", "b", "c"):
        opens = 3 if user != "c" else 2
        for n in range(opens):
            records.append(
                user_event(project, user, type="track", event="app_open", event_id=f"{user}-{n}")
            )
    await produce(kafka_bootstrap, records + records)
    await wait_for_count(project_client, audience, 2)
    entered = await read_topic(
        kafka_bootstrap,
        Topic.MEMBERSHIP_CHANGES,
        lambda v: v["audience_id"] == audience,
        expected=3,
        timeout=5,
    )
    assert sorted(v["user_id"] for v in entered) == ["a", "b"]


async def test_out_of_order_within_user__applied_by_event_time(
    project_client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    audience = await create(project_client, "Premium", "Users with plan=premium")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    newer = user_event(
        project,
        "u",
        type="identify",
        traits={"plan": "premium"},
        timestamp=(t0 + timedelta(hours=1)).isoformat(),
    )
    older = user_event(
        project, "u", type="identify", traits={"plan": "free"}, timestamp=t0.isoformat()
    )
    await produce(kafka_bootstrap, [newer, older])
    await wait_for_count(project_client, audience, 1)


async def test_poison_message__dead_lettered__good_ones_processed(
    project_client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    audience = await create(project_client, "Premium", "Users with plan=premium")
    marker = uuid.uuid4().hex
    poison = [
        (b"k", b"{not json" + marker.encode()),
        (
            b"k",
            json.dumps(
                {
                    "type": "identify",
                    "project_id": project,
                    "user_id": 5,
                    "traits": "x",
                    "m": marker,
                }
            ).encode(),
        ),
        (
            b"k",
            json.dumps(
                {"type": "teleport", "project_id": project, "user_id": "z", "m": marker}
            ).encode(),
        ),
    ]
    good = [
        user_event(project, f"g{i}", type="identify", traits={"plan": "premium"}) for i in range(3)
    ]
    await produce(kafka_bootstrap, [good[0], poison[0], good[1], poison[1], poison[2], good[2]])
    await wait_for_count(project_client, audience, 3)
    letters = await read_topic(
        kafka_bootstrap,
        Topic.DEAD_LETTERS,
        lambda v: marker.encode() in __import__("base64").b64decode(v["payload_b64"]),
        expected=3,
    )
    assert len(letters) == 3
    assert all(
        letter["error"] and letter["source_topic"] == Topic.USER_EVENTS for letter in letters
    )


async def test_membership_events__published_keyed_by_user(
    project_client: httpx.AsyncClient, stack: Stack, kafka_bootstrap: str
) -> None:
    audience = await create(project_client, "Premium", "Users with plan=premium")
    await project_client.post("/v1/identify", json={"user_id": "m1", "traits": {"plan": "premium"}})
    await wait_for_count(project_client, audience, 1)
    await project_client.post("/v1/identify", json={"user_id": "m1", "traits": {"plan": "free"}})
    await wait_for_count(project_client, audience, 0)
    events = await read_topic(
        kafka_bootstrap,
        Topic.MEMBERSHIP_CHANGES,
        lambda v: v["audience_id"] == audience,
        expected=2,
    )
    assert [e["type"] for e in events] == ["membership.entered", "membership.exited"]
    assert events[0]["version"] < events[1]["version"]
