"""Klaviyo lists into synced audiences, against the fake Klaviyo and the real broker and store."""

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from pymongo import AsyncMongoClient

from tests.fakes.klaviyo import FakeKlaviyo, page_cursor, running
from tests.integration.conftest import Stack
from tests.integration.helpers import read_topic, wait_for_count

pytestmark = [pytest.mark.integration, pytest.mark.sync_integration]

API_KEY = "pk_test_fake_key_1234"
# Upper bounds, not timings: the evaluator may still be folding earlier tests' events.
COUNT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def klaviyo(stack: Stack) -> Iterator[FakeKlaviyo]:
    port = urlparse(stack.env["AUDIENCES_KLAVIYO_BASE_URL"]).port
    with running(FakeKlaviyo(), port=port) as fake:
        yield fake


@pytest.fixture
async def connected(project_client: httpx.AsyncClient, klaviyo: FakeKlaviyo) -> httpx.AsyncClient:
    response = await project_client.post("/v1/integrations/klaviyo", json={"api_key": API_KEY})
    assert response.status_code == 201, response.text
    return project_client


def people(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"{prefix}{i}@example.com",
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "phone_number": f"+1555{i:07d}",
            "properties": {"tier": "gold" if i % 2 else "silver"},
        }
        for i in range(count)
    ]


async def import_list(client: httpx.AsyncClient, list_id: str) -> dict[str, Any]:
    response = await client.post("/v1/audiences/import/klaviyo", json={"list_ids": [list_id]})
    assert response.status_code == 201, response.text
    (audience,) = response.json()["items"]
    return dict(audience)


async def wait_run(
    client: httpx.AsyncClient, audience_id: str, run_id: str | None = None, timeout: float = 180
) -> dict[str, Any]:
    path = f"/v1/audiences/{audience_id}/" + (f"syncs/{run_id}" if run_id else "sync")
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await client.get(path)).json()
        run = body.get("run") or {}
        if run.get("status") in ("completed", "failed"):
            return dict(run)
        await asyncio.sleep(0.2)
    raise AssertionError(f"sync of {audience_id} did not finish: {body}")


async def test_connect__key_is_never_returned__only_its_last_four(
    project_client: httpx.AsyncClient, klaviyo: FakeKlaviyo
) -> None:
    created = await project_client.post("/v1/integrations/klaviyo", json={"api_key": API_KEY})
    assert created.status_code == 201, created.text
    shown = await project_client.get("/v1/integrations/klaviyo")
    for body in (created.json(), shown.json()):
        assert body["key_last4"] == "1234"
        assert API_KEY not in str(body)
    refused = await project_client.post(
        "/v1/integrations/klaviyo", json={"api_key": "pk_wrong_key_0000"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "klaviyo_auth_failed"
    assert (await project_client.delete("/v1/integrations/klaviyo")).status_code == 204
    assert (await project_client.get("/v1/integrations/klaviyo")).status_code == 404


async def test_import__multi_page_list__becomes_a_synced_audience_with_every_member(
    connected: httpx.AsyncClient, klaviyo: FakeKlaviyo
) -> None:
    list_id = klaviyo.add_list("VIP customers")
    klaviyo.add_profiles(list_id, people("vip", 250))

    audience = await import_list(connected, list_id)

    assert audience["name"] == "VIP customers"
    assert audience["kind"] == "synced"
    assert audience["status"] == "syncing"
    run = await wait_run(connected, audience["id"])
    assert run["status"] == "completed", run
    assert (run["pages"], run["profiles"], run["entered"]) == (3, 250, 250)
    pages = klaviyo.requests(f"/api/lists/{list_id}/profiles")
    assert all(r.query.get("page[size]") == "100" for r in pages)
    await wait_for_count(connected, audience["id"], 250, timeout=COUNT_TIMEOUT_S)
    members = (await connected.get(f"/v1/audiences/{audience['id']}/members?first=100")).json()
    first = members["items"][0]
    assert first["email"].endswith("@example.com")
    assert first["full_name"].startswith("First")


async def test_sync__429_storm__honours_retry_after_and_completes(
    connected: httpx.AsyncClient, klaviyo: FakeKlaviyo, stack: Stack
) -> None:
    list_id = klaviyo.add_list("Storm")
    klaviyo.add_profiles(list_id, people("storm", 600))
    # A storm of 429s on the second page, however fast or slow the service works through the
    # first (a budget alone only throttles a client faster than it), then a tight budget.
    second_page = f"page[cursor]={page_cursor(100)}"
    klaviyo.fail(times=4, status=429, path_contains=second_page, retry_after=2)
    klaviyo.budget, klaviyo.window_s = 2, 4.0
    try:
        audience = await import_list(connected, list_id)
        run = await wait_run(connected, audience["id"], timeout=180)
    finally:
        klaviyo.budget = None
    assert run["status"] == "completed", run
    assert run["profiles"] == 600
    log = klaviyo.requests(f"/api/lists/{list_id}/profiles")
    throttled = [i for i, r in enumerate(log) if r.status == 429]
    assert len(throttled) >= 4
    for index in throttled:
        if index + 1 < len(log):
            waited = log[index + 1].at - log[index].at
            assert waited >= 0.95 * (log[index].retry_after or 0), (index, waited)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{stack.services['sync'].port}/metrics")).text
    assert "audiences_sync_klaviyo_throttled_total" in metrics
    await wait_for_count(connected, audience["id"], 600, timeout=COUNT_TIMEOUT_S)


async def test_sync__paced_under_the_budget__is_never_throttled(
    connected: httpx.AsyncClient, klaviyo: FakeKlaviyo
) -> None:
    list_id = klaviyo.add_list("Paced")
    klaviyo.add_profiles(list_id, people("paced", 900))
    klaviyo.budget, klaviyo.window_s = 12, 1.0  # Klaviyo's steady limit is ~12/s
    try:
        audience = await import_list(connected, list_id)
        run = await wait_run(connected, audience["id"])
    finally:
        klaviyo.budget = None
    assert run["status"] == "completed", run
    log = klaviyo.requests(f"/api/lists/{list_id}/profiles")
    assert len(log) == 9
    assert all(r.status == 200 for r in log)


async def test_sync__5xx_mid_pull__resumes_from_the_checkpoint(
    connected: httpx.AsyncClient, klaviyo: FakeKlaviyo
) -> None:
    list_id = klaviyo.add_list("Flaky")
    klaviyo.add_profiles(list_id, people("flaky", 500))
    # Page 3 fails more often than the client retries one request (6), so the run itself
    # stops and resumes; pages 1 and 2 must not be fetched again.
    third_page = f"page[cursor]={page_cursor(200)}"
    klaviyo.fail(times=8, status=503, path_contains=third_page)

    audience = await import_list(connected, list_id)
    run = await wait_run(connected, audience["id"], timeout=120)

    assert run["status"] == "completed", run
    assert run["resumes"] >= 1
    assert run["profiles"] == 500
    log = klaviyo.requests(f"/api/lists/{list_id}/profiles")
    ok = [r for r in log if r.status == 200]
    first_pages = [r for r in ok if "page[cursor]" not in r.query]
    assert len(first_pages) == 1
    assert len(ok) == 5
    assert sum(1 for r in log if r.status == 503) == 8
    await wait_for_count(connected, audience["id"], 500, timeout=COUNT_TIMEOUT_S)


async def test_sync__members_removed_in_klaviyo__exit_the_audience(
    connected: httpx.AsyncClient, klaviyo: FakeKlaviyo, stack: Stack
) -> None:
    list_id = klaviyo.add_list("Shrinking")
    ids = klaviyo.add_profiles(list_id, people("shrink", 5))
    audience = await import_list(connected, list_id)
    await wait_run(connected, audience["id"])
    await wait_for_count(connected, audience["id"], 5, timeout=COUNT_TIMEOUT_S)

    klaviyo.remove_from_list(list_id, ids[0])
    klaviyo.remove_from_list(list_id, ids[1])
    started = await connected.post(f"/v1/audiences/{audience['id']}/sync")
    assert started.status_code == 202, started.text
    run = await wait_run(connected, audience["id"], started.json()["run_id"])

    assert run["status"] == "completed", run
    assert run["exited"] == 2
    await wait_for_count(connected, audience["id"], 3, timeout=COUNT_TIMEOUT_S)
    exits = await read_topic(
        stack.env["AUDIENCES_KAFKA_BOOTSTRAP"],
        "membership.changes.v1",
        lambda v: v["audience_id"] == audience["id"] and v["type"] == "membership.exited",
        expected=2,
        timeout=COUNT_TIMEOUT_S,
    )
    assert len(exits) == 2


async def test_sync__user_identified_through_the_api__is_mapped_by_email_and_phone(
    connected: httpx.AsyncClient,
    klaviyo: FakeKlaviyo,
    stack: Stack,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    identified = await connected.post(
        "/v1/identify",
        json={
            "batch": [
                {"user_id": "known_1", "traits": {"email": "Known.One@Example.com"}},
                {"user_id": "known_2", "traits": {"phone": "+1 (555) 000-7777"}},
            ]
        },
    )
    assert identified.status_code in (200, 202), identified.text
    # The evaluator links identified users by their normalized keys once it folded them.
    links = mongo_client[stack.database].identity_links
    project_id = connected.project_id  # type: ignore[attr-defined]
    wanted = [f"{project_id}|email:known.one@example.com", f"{project_id}|phone:+15550007777"]
    deadline = time.monotonic() + COUNT_TIMEOUT_S
    found: list[dict[str, Any]] = []
    while len(found) < 2 and time.monotonic() < deadline:
        found = await links.find({"_id": {"$in": wanted}}).to_list()
        await asyncio.sleep(0.2)
    assert {link["_id"]: link["user_id"] for link in found} == dict(
        zip(wanted, ["known_1", "known_2"], strict=True)
    )

    list_id = klaviyo.add_list("Known people")
    klaviyo.add_profiles(
        list_id,
        [
            {"email": "known.one@EXAMPLE.com", "first_name": "Kay"},
            {"phone_number": "+15550007777"},
            {"email": "stranger@example.com"},
        ],
    )
    audience = await import_list(connected, list_id)
    run = await wait_run(connected, audience["id"])
    assert run["status"] == "completed", run
    await wait_for_count(connected, audience["id"], 3, timeout=COUNT_TIMEOUT_S)
    members = (await connected.get(f"/v1/audiences/{audience['id']}/members")).json()["items"]
    users = {member["user_id"] for member in members}
    assert {"known_1", "known_2"} < users
    assert len(users) == 3


async def test_sync__not_synced_or_no_source_or_running__is_refused(
    connected: httpx.AsyncClient, klaviyo: FakeKlaviyo
) -> None:
    dynamic = await connected.post(
        "/v1/audiences", json={"name": "Dyn", "criteria": "Users with plan=premium"}
    )
    assert dynamic.status_code == 201, dynamic.text
    refused = await connected.post(f"/v1/audiences/{dynamic.json()['id']}/sync")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "not_a_synced_list"
    assert refused.json()["error"]["message"] == "Audience is not a synced list"

    sourceless = await connected.post("/v1/audiences", json={"name": "Bare", "kind": "synced"})
    assert sourceless.status_code == 201, sourceless.text
    refused = await connected.post(f"/v1/audiences/{sourceless.json()['id']}/sync")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "no_sync_source"

    list_id = klaviyo.add_list("Busy")
    # The lock is held from the moment the import answers until the run ends (3 pages later).
    klaviyo.add_profiles(list_id, people("busy", 300))
    audience = await import_list(connected, list_id)
    again = await connected.post(f"/v1/audiences/{audience['id']}/sync")
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "sync_in_progress"
    await wait_run(connected, audience["id"])
    after = await connected.post(f"/v1/audiences/{audience['id']}/sync")
    assert after.status_code == 202, after.text
    # Leave nothing running for the tests after this one (the fake goes with this module).
    run = await wait_run(connected, audience["id"], after.json()["run_id"], timeout=120)
    assert run["status"] == "completed", run
