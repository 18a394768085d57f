"""The walking skeleton: audience → identify/track → evaluator → count, through real processes."""

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.integration.helpers import wait_for_count

pytestmark = pytest.mark.integration


async def test_skeleton__identify_then_track__user_enters(
    project_client: httpx.AsyncClient,
) -> None:
    created = await project_client.post(
        "/v1/audiences", json={"name": "Premium", "criteria": "Users with plan=premium"}
    )
    assert created.status_code == 201, created.text
    audience = created.json()
    assert audience["name"] == "Premium"
    assert audience["rule"]["rules"][0]["field"] == "plan"

    identify = await project_client.post(
        "/v1/identify", json={"user_id": "u1", "traits": {"plan": "premium"}}
    )
    track = await project_client.post("/v1/events", json={"user_id": "u1", "event": "app_open"})
    assert identify.status_code == 202, identify.text
    assert track.status_code == 202, track.text

    # Freshness is measured by `make bench-evaluator`, never by a timed test.
    await wait_for_count(project_client, audience["id"], 1, timeout=60)


async def test_skeleton__every_endpoint_but_health__requires_a_key(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        for method, path in [
            ("POST", "/v1/audiences"),
            ("GET", "/v1/audiences"),
            ("POST", "/v1/identify"),
            ("POST", "/v1/events"),
        ]:
            response = await anonymous.request(method, path, json={})
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"


async def test_skeleton__invalid_key__is_401(stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": "Bearer nope"}
    ) as client:
        response = await client.get("/v1/audiences")
    assert response.status_code == 401
