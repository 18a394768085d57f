"""Rate limits, refresh, size history, create-time estimates and tenant isolation, over HTTP."""

import asyncio
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ServiceProcess, Stack, free_port
from tests.integration.helpers import (
    assert_error,
    identified,
    new_project_key,
    wait_for_count,
    wait_ready,
)

pytestmark = pytest.mark.integration


async def test_rate_limit__key_own_limit__429_with_retry_after_and_headers(stack: Stack) -> None:
    _project, key = await new_project_key(stack, rate_limit={"per_second": 0.001, "burst": 3})
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        answers = [await client.get("/v1/audiences") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
        assert all(a.headers["RateLimit-Limit"] == "3" for a in answers)
        refused = await client.get("/v1/audiences")
        error = assert_error(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 999  # one token at 0.001 per second
        assert error["details"]["retry_after_seconds"] == int(refused.headers["Retry-After"])
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert int(refused.headers["RateLimit-Reset"]) > 0
        # The Segment-style routes spend from the same bucket.
        assert (
            await client.post("/v1/track", json={"userId": "u", "event": "e"})
        ).status_code == 429


async def test_rate_limit__default__headers_on_success_and_error_responses(
    project_client: httpx.AsyncClient,
) -> None:
    ok = await project_client.get("/v1/audiences")
    missing = await project_client.get("/v1/audiences/aud_missing")
    assert_error(missing, 404, "not_found")
    for response in (ok, missing):
        assert response.headers["RateLimit-Limit"] == "100"  # AUDIENCES_RATE_LIMIT_BURST default
        assert int(response.headers["RateLimit-Remaining"]) < 100
    anonymous = await project_client.get("/v1/audiences", headers={"Authorization": ""})
    assert_error(anonymous, 401, "unauthorized")
    assert "RateLimit-Limit" not in anonymous.headers


async def test_refresh_and_history__counts_entries_and_exits(
    project_client: httpx.AsyncClient,
) -> None:
    await identified(project_client, {"a": {"plan": "pro"}, "b": {"plan": "pro"}})
    created = await project_client.post(
        "/v1/audiences", json={"name": "Pro", "criteria": "Users with plan=pro"}
    )
    assert created.status_code == 201, created.text
    audience_id = created.json()["id"]
    await wait_ready(project_client, audience_id)
    await wait_for_count(project_client, audience_id, 2)
    await identified(project_client, {"a": {"plan": "free"}})
    await wait_for_count(project_client, audience_id, 1)

    # Concurrent refreshes: one is accepted, the others find it running. A refresh of two
    # profiles can also finish while the four requests are served, and a request after that is
    # accepted again (CI saw 202, 202, 409, 409); served at once, some find one running.
    answers = await asyncio.gather(
        *(project_client.post(f"/v1/audiences/{audience_id}/refresh") for _ in range(4))
    )
    codes = {a.status_code for a in answers}
    assert codes == {202, 409}, [a.text for a in answers]  # some accepted, some refused
    for refused in (a for a in answers if a.status_code == 409):
        assert_error(refused, 409, "refresh_in_progress")
    accepted = next(a for a in answers if a.status_code == 202).json()
    assert accepted["audience_id"] == audience_id
    ready = await wait_ready(project_client, audience_id)
    assert ready["user_count"] == 1

    history = await project_client.get(f"/v1/audiences/{audience_id}/history")
    assert history.status_code == 200, history.text
    points = history.json()
    assert points, "a build writes a history point"
    assert all(set(p) == {"at", "count", "entered", "exited"} for p in points)
    assert sum(p["entered"] for p in points) == 2
    assert sum(p["exited"] for p in points) == 1
    assert points[-1]["count"] == 1

    future = await project_client.get(
        f"/v1/audiences/{audience_id}/history", params={"since": "2999-01-01T00:00:00Z"}
    )
    assert future.json() == []
    bad = await project_client.get(
        f"/v1/audiences/{audience_id}/history", params={"since": "yesterday-ish"}
    )
    assert_error(bad, 400, "invalid_request")


async def test_refresh__read_key__403_and_unknown__404(stack: Stack) -> None:
    _project, key = await new_project_key(stack, scope="read")
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as reader:
        assert_error(await reader.post("/v1/audiences/aud_nope/refresh"), 403, "read_only_key")
        assert_error(await reader.get("/v1/audiences/aud_nope/history"), 404, "not_found")


async def test_other_project__gets_404_on_history_refresh_and_reads(
    project_client: httpx.AsyncClient, other_project_client: httpx.AsyncClient
) -> None:
    created = await project_client.post(
        "/v1/audiences", json={"name": "Mine", "criteria": "Users with plan=pro"}
    )
    audience_id = created.json()["id"]
    for method, path in [
        ("GET", f"/v1/audiences/{audience_id}"),
        ("GET", f"/v1/audiences/{audience_id}/history"),
        ("POST", f"/v1/audiences/{audience_id}/refresh"),
        ("GET", f"/v1/audiences/{audience_id}/members"),
        ("DELETE", f"/v1/audiences/{audience_id}"),
    ]:
        response = await other_project_client.request(method, path)
        assert_error(response, 404, "not_found")
    assert (await project_client.get(f"/v1/audiences/{audience_id}")).status_code == 200


async def test_list__many_audiences__each_with_its_own_state(
    project_client: httpx.AsyncClient,
) -> None:
    await identified(project_client, {"x": {"plan": "pro"}, "y": {"plan": "team"}})
    ids = {}
    for plan in ("pro", "team", "none"):
        created = await project_client.post(
            "/v1/audiences", json={"name": plan, "criteria": f"Users with plan={plan}"}
        )
        ids[created.json()["id"]] = 0 if plan == "none" else 1
    for audience_id, expected in ids.items():
        await wait_ready(project_client, audience_id)
        await wait_for_count(project_client, audience_id, expected)
    seen: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        params: dict[str, Any] = {"first": 2, **({"after": after} if after else {})}
        page = (await project_client.get("/v1/audiences", params=params)).json()
        seen.update({item["id"]: item for item in page["items"]})
        if not page["page_info"]["has_next_page"]:
            break
        after = page["page_info"]["end_cursor"]
    assert set(seen) == set(ids)
    for audience_id, expected in ids.items():
        assert seen[audience_id]["status"] == "ready"
        assert seen[audience_id]["user_count"] == expected


async def test_create__not_built_in_time__building_with_estimate(stack: Stack) -> None:
    project_id, key = await new_project_key(stack)
    impatient = ServiceProcess(
        "api-nowait", free_port(), {**stack.env, "AUDIENCES_CREATE_WAIT_SECONDS": "0"}
    )
    impatient.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{impatient.port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client:
            await identified(
                client, {"e1": {"tier": "gold"}, "e2": {"tier": "gold"}, "e3": {"tier": "x"}}
            )
            created = await client.post(
                "/v1/audiences", json={"name": "Gold", "criteria": "Users with tier=gold"}
            )
            assert created.status_code == 201, created.text
            body = created.json()
            assert body["status"] == "building"
            assert body["user_count_is_estimate"] is True
            assert body["user_count"] == 2  # what the rule matches in the store right now
            assert body["project_id"] == project_id
            ready = await wait_ready(client, body["id"])
            assert ready["user_count_is_estimate"] is False
    finally:
        impatient.stop()
