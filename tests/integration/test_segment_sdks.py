"""The real Segment and RudderStack Python SDKs, pointed at the running gateway, fill audiences."""

import asyncio
import gzip
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient  # type: ignore[import-untyped]
from segment.analytics.client import Client as SegmentClient  # type: ignore[import-untyped]

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

# How long the evaluator may take to reflect what was sent; counts usually settle well within 1 s.
SETTLE_SECONDS = 15


def write_key(client: httpx.AsyncClient) -> str:
    """The project key the `project_client` fixture authenticates with: our "write key"."""
    return str(client.headers["Authorization"]).removeprefix("Bearer ")


@contextmanager
def segment_client(stack: Stack, key: str) -> Iterator[SegmentClient]:
    """Segment's SDK as an app would run it: batching consumer thread, gzip bodies. Leaving the
    block flushes synchronously and fails the test on any upload error."""
    errors: list[Any] = []
    client = SegmentClient(
        write_key=key,
        host=stack.api_url,
        gzip=True,
        max_retries=2,
        upload_interval=0.1,
        on_error=lambda error, batch: errors.append((error, batch)),
    )
    try:
        yield client
    finally:
        client.shutdown()
    assert errors == []


def rudder_client(stack: Stack, key: str) -> RudderClient:
    """RudderStack's SDK with its data-plane URL at the gateway, posting each call synchronously
    (it raises on an error response), gzip on as by default."""
    return RudderClient(write_key=key, host=stack.api_url, sync_mode=True, gzip=True)


async def in_thread(calls: Callable[[], None]) -> None:
    """The SDKs block on HTTP; keep them off the event loop."""
    await asyncio.to_thread(calls)


async def create_audience(client: httpx.AsyncClient, name: str, criteria: str) -> str:
    response = await client.post("/v1/audiences", json={"name": name, "criteria": criteria})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def count(client: httpx.AsyncClient, audience_id: str) -> int:
    response = await client.get(f"/v1/audiences/{audience_id}/count")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


async def wait_for_count(client: httpx.AsyncClient, audience_id: str, expected: int) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    current = None
    while time.monotonic() < deadline:
        current = await count(client, audience_id)
        if current == expected:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"audience {audience_id} count stayed {current}, expected {expected}")


async def members(client: httpx.AsyncClient, audience_id: str) -> list[str]:
    response = await client.get(f"/v1/audiences/{audience_id}/members")
    assert response.status_code == 200, response.text
    return sorted(item["user_id"] for item in response.json()["items"])


async def barrier(client: httpx.AsyncClient, stack: Stack, user_id: str) -> None:
    """Wait until everything sent for `user_id` so far has been evaluated: a user's events share
    one partition and are processed in order, so once a later marker event shows, earlier ones
    have been applied. Lets a test assert that a count *stayed* where it was."""
    marker = f"barrier_{time.monotonic_ns()}"
    audience = await create_audience(
        client, marker, f"Users who triggered event={marker} at least 1 times"
    )
    rudder = rudder_client(stack, write_key(client))
    await in_thread(lambda: rudder.track(user_id=user_id, event=marker))
    await wait_for_count(client, audience, 1)


async def test_segment_sdk__identify_track_page_group__users_land_in_audiences(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    premium = await create_audience(project_client, "Premium", "Users with plan=premium")
    readers = await create_audience(
        project_client, "Readers", "Users who triggered event=page_viewed at least 2 times"
    )
    signed_up = await create_audience(
        project_client, "Signed up", "Users who triggered event=signed_up at least 1 times"
    )
    gold = await create_audience(
        project_client, "Gold accounts", "Users with groups.acme.tier=gold"
    )

    def send() -> None:
        with segment_client(stack, write_key(project_client)) as analytics:
            analytics.identify("u1", {"plan": "premium", "email": "u1@example.test"})
            analytics.identify("u2", {"plan": "free"})
            analytics.track("u2", "signed_up", {"source": "ad"})
            analytics.page("u1", "Docs", "Home")
            analytics.page("u1", "Docs", "Pricing")
            analytics.page("u2", "Docs", "Home")
            analytics.group("u2", "acme", {"tier": "gold"})
            analytics.group("u1", "acme", {"tier": "silver"})

    await in_thread(send)

    await wait_for_count(project_client, premium, 1)
    await wait_for_count(project_client, readers, 1)
    await wait_for_count(project_client, signed_up, 1)
    await wait_for_count(project_client, gold, 1)
    assert await members(project_client, premium) == ["u1"]
    assert await members(project_client, readers) == ["u1"]
    assert await members(project_client, signed_up) == ["u2"]
    assert await members(project_client, gold) == ["u2"]


async def test_segment_sdk__user_in_two_groups__keeps_both_groups_traits(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    acme = await create_audience(project_client, "Acme gold", "Users with groups.acme.tier=gold")
    globex = await create_audience(
        project_client, "Globex admins", "Users with groups.globex.role=admin"
    )

    def send() -> None:
        with segment_client(stack, write_key(project_client)) as analytics:
            analytics.group("u1", "acme", {"tier": "gold"})
            analytics.group("u1", "globex", {"role": "admin"})

    await in_thread(send)
    await wait_for_count(project_client, globex, 1)
    await wait_for_count(project_client, acme, 1)


async def test_rudder_sdk__identify_track_page_screen__users_land_in_audiences(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    premium = await create_audience(project_client, "Premium", "Users with plan=premium")
    viewers = await create_audience(
        project_client, "Viewers", "Users who triggered event=page_viewed at least 1 times"
    )
    app_users = await create_audience(
        project_client, "App users", "Users who triggered event=screen_viewed at least 2 times"
    )
    buyers = await create_audience(
        project_client,
        "Premium buyers",
        "Users with plan=premium AND who triggered event=purchased at least 1 times",
    )
    rudder = rudder_client(stack, write_key(project_client))

    def send() -> None:
        # RudderStack's identify carries the traits in context.traits only.
        rudder.identify(user_id="r1", traits={"plan": "premium"})
        rudder.identify(user_id="r2", traits={"plan": "premium"})
        rudder.track(user_id="r1", event="purchased", properties={"total": 30})
        rudder.page(user_id="r2", name="Home")
        rudder.screen(user_id="r2", name="Feed")
        rudder.screen(user_id="r2", name="Settings")
        rudder.screen(user_id="r1", name="Feed")

    await in_thread(send)

    await wait_for_count(project_client, premium, 2)
    await wait_for_count(project_client, viewers, 1)
    await wait_for_count(project_client, app_users, 1)
    await wait_for_count(project_client, buyers, 1)
    assert await members(project_client, buyers) == ["r1"]
    assert await members(project_client, app_users) == ["r2"]


async def test_retried_batch__same_message_ids__counted_once(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    twice = await create_audience(
        project_client, "Twice", "Users who triggered event=page_viewed at least 2 times"
    )
    thrice = await create_audience(
        project_client, "Thrice", "Users who triggered event=page_viewed at least 3 times"
    )

    def send_batch() -> None:
        # What an SDK resends after a lost response: the very same messages, same messageIds.
        with segment_client(stack, write_key(project_client)) as analytics:
            analytics.page("u1", name="Home", message_id="retry-msg-1")
            analytics.page("u1", name="Pricing", message_id="retry-msg-2")

    await in_thread(send_batch)
    await wait_for_count(project_client, twice, 1)
    await in_thread(send_batch)
    await barrier(project_client, stack, "u1")

    assert await count(project_client, twice) == 1
    assert await count(project_client, thrice) == 0


async def test_alias__anonymous_visitor_with_prior_events__merged_into_the_user(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    two = await create_audience(
        project_client, "Two pages", "Users who triggered event=page_viewed at least 2 times"
    )
    three = await create_audience(
        project_client, "Three pages", "Users who triggered event=page_viewed at least 3 times"
    )
    four = await create_audience(
        project_client, "Four pages", "Users who triggered event=page_viewed at least 4 times"
    )
    key = write_key(project_client)

    def browse_anonymously() -> None:
        with segment_client(stack, key) as analytics:
            analytics.page(anonymous_id="anon-1", name="Home")
            analytics.page(anonymous_id="anon-1", name="Pricing")
            analytics.identify("u1", {"plan": "premium"})
            analytics.page("u1", name="Account")

    await in_thread(browse_anonymously)
    # The anonymous visitor has a profile of its own, which qualifies on its own events.
    await wait_for_count(project_client, two, 1)
    assert await members(project_client, two) == ["anonymous:anon-1"]

    def alias() -> None:
        with segment_client(stack, key) as analytics:
            analytics.alias("anon-1", "u1")

    await in_thread(alias)
    # u1 now holds its own page view and the visitor's two; the visitor is u1, not a second user.
    await wait_for_count(project_client, three, 1)
    await wait_for_count(project_client, two, 1)
    assert await members(project_client, three) == ["u1"]
    assert await members(project_client, two) == ["u1"]

    # Merging the same visitor again (a new alias call, new messageId) changes nothing.
    await in_thread(alias)
    await barrier(project_client, stack, "u1")
    assert await count(project_client, four) == 0
    assert await count(project_client, three) == 1
    assert await count(project_client, two) == 1


async def test_identify_with_anonymous_id__merges_the_visitor(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    readers = await create_audience(
        project_client, "Readers", "Users who triggered event=page_viewed at least 2 times"
    )
    premium_readers = await create_audience(
        project_client,
        "Premium readers",
        "Users with plan=premium AND who triggered event=page_viewed at least 2 times",
    )
    rudder = rudder_client(stack, write_key(project_client))

    def browse() -> None:
        rudder.page(anonymous_id="anon-2", name="Home")
        rudder.page(anonymous_id="anon-2", name="Blog")

    await in_thread(browse)
    await wait_for_count(project_client, readers, 1)

    await in_thread(
        lambda: rudder.identify(user_id="u2", anonymous_id="anon-2", traits={"plan": "premium"})
    )
    await wait_for_count(project_client, premium_readers, 1)
    assert await members(project_client, premium_readers) == ["u2"]
    await wait_for_count(project_client, readers, 1)
    assert await members(project_client, readers) == ["u2"]


async def test_http__gzip_batch_with_an_oversize_message__the_rest_accepted(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    buyers = await create_audience(
        project_client, "Buyers", "Users who triggered event=purchased at least 1 times"
    )
    batch = {
        "batch": [
            {"type": "track", "userId": "g1", "event": "purchased", "messageId": "g-1"},
            {
                "type": "track",
                "userId": "g2",
                "event": "purchased",
                "properties": {"pad": "x" * 40_000},
            },
            {"type": "track", "userId": "g3", "event": "purchased", "messageId": "g-3"},
        ],
        "sentAt": "2026-01-01T00:00:00Z",
    }
    async with httpx.AsyncClient(base_url=stack.api_url, auth=(write_key(project_client), "")) as c:
        response = await c.post(
            "/v1/batch",
            content=gzip.compress(json.dumps(batch).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["success"], body["accepted"]) == (False, 2)
    assert [(d["index"], d["code"]) for d in body["error"]["details"]] == [(1, "message_too_large")]
    await wait_for_count(project_client, buyers, 2)
    assert await members(project_client, buyers) == ["g1", "g3"]


async def test_http__gzip_bomb__refused(stack: Stack, project_client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b" " * 100_000_000, compresslevel=9)
    async with httpx.AsyncClient(base_url=stack.api_url, auth=(write_key(project_client), "")) as c:
        response = await c.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_http__spec_identify_on_the_native_path__accepted(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    premium = await create_audience(project_client, "Premium", "Users with plan=premium")
    spec = await project_client.post(
        "/v1/identify",
        json={"userId": "s1", "traits": {"plan": "premium"}, "messageId": "spec-identify-1"},
    )
    native = await project_client.post(
        "/v1/identify", json={"user_id": "s2", "traits": {"plan": "premium"}}
    )
    assert (spec.status_code, spec.json()) == (200, {"success": True})
    assert native.status_code == 202, native.text
    await wait_for_count(project_client, premium, 2)
