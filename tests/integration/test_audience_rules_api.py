"""The rule language through the API: the seeds' four input forms, preview, errors, references."""

from typing import Any

import httpx
import pytest

from tests.integration.helpers import wait_for_count, wait_ready

pytestmark = pytest.mark.integration

SEED_000 = [
    "Users with plan=premium AND last_active within 7 days",
    "Users who completed purchase in the last 30 days",
    "Users with email AND NOT subscribed to newsletter",
    "Users from country=US AND plan=premium",
    "Users who triggered event=app_open more than 10 times",
    "Users with signup_date before 2024-01-01",
]


async def test_seed_000_criteria__all_six__create_201(project_client: httpx.AsyncClient) -> None:
    for criteria in SEED_000:
        response = await project_client.post(
            "/v1/audiences", json={"name": criteria[:40], "criteria": criteria}
        )
        assert response.status_code == 201, (criteria, response.text)
        body = response.json()
        assert body["criteria"] == criteria
        assert body["rule"]["rules"]


async def test_four_input_forms__same_meaning__same_members(
    project_client: httpx.AsyncClient,
) -> None:
    await project_client.post(
        "/v1/identify",
        json={
            "batch": [
                {"user_id": "a", "traits": {"plan": "premium", "country": "US"}},
                {"user_id": "b", "traits": {"plan": "premium", "country": "DE"}},
                {"user_id": "c", "traits": {"plan": "free", "country": "US"}},
            ]
        },
    )
    forms: list[dict[str, Any]] = [
        {"criteria": "Users from country=US AND plan=premium"},
        {
            "filter": {
                "match": "all",
                "rules": [
                    {"type": "trait", "field": "country", "operator": "is", "value": "US"},
                    {"type": "trait", "field": "plan", "operator": "is", "value": "premium"},
                ],
            }
        },
        {
            "filters": [
                {"field": "country", "operator": "is", "value": "US"},
                {"field": "plan", "operator": "is", "value": "premium", "conjunction": "and"},
            ]
        },
        {"properties": {"country": ["US"], "plan": ["premium"]}},
    ]
    for n, form in enumerate(forms):
        created = await project_client.post("/v1/audiences", json={"name": f"f{n}", **form})
        assert created.status_code == 201, created.text
        await wait_ready(project_client, created.json()["id"])
        await wait_for_count(project_client, created.json()["id"], 1)
        preview = await project_client.post("/v1/audiences/preview", json=form)
        assert preview.json()["user_count"] == 1
        assert preview.json()["sample"] == ["a"]


async def test_bad_criteria__400_with_position_and_expected(
    project_client: httpx.AsyncClient,
) -> None:
    response = await project_client.post(
        "/v1/audiences", json={"name": "bad", "criteria": "Users with plan="}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_criteria"
    assert error["position"] >= 1
    assert error["expected"]


async def test_two_rule_inputs__400(project_client: httpx.AsyncClient) -> None:
    response = await project_client.post(
        "/v1/audiences",
        json={"name": "x", "criteria": "Users with email", "properties": {"plan": ["a"]}},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "rule_input_required"


async def test_in_audience_by_name__resolved_and_evaluated__cycles_refused(
    project_client: httpx.AsyncClient,
) -> None:
    base = await project_client.post(
        "/v1/audiences", json={"name": "Paying", "criteria": "Users with plan=premium"}
    )
    base_id = base.json()["id"]
    derived = await project_client.post(
        "/v1/audiences",
        json={"name": "Paying US", "criteria": 'Users in audience "Paying" AND country=US'},
    )
    assert derived.status_code == 201, derived.text
    derived_id = derived.json()["id"]
    await project_client.post(
        "/v1/identify", json={"user_id": "z", "traits": {"plan": "premium", "country": "US"}}
    )
    await wait_for_count(project_client, derived_id, 1)

    cycle = await project_client.put(
        f"/v1/audiences/{base_id}", json={"criteria": 'Users in audience "Paying US"'}
    )
    assert cycle.status_code == 400
    assert cycle.json()["error"]["code"] == "audience_cycle"
    unknown = await project_client.post(
        "/v1/audiences", json={"name": "u", "criteria": 'Users in audience "Nope"'}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_audience"
