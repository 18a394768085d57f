"""Seed 002 groups and loyalty tiers, seed 003 segments: through HTTP, errors and tenancy."""

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.helpers import assert_error, identified, wait_for_count

pytestmark = pytest.mark.integration

TIERS = [
    {"name": "Bronze", "min": 0, "max": 100},
    {"name": "Silver", "min": 100, "max": 500},
    {"name": "Gold", "min": 500},
]


async def all_members(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        query = {"first": 1, **params, **({"after": after} if after else {})}
        page = await client.get(path, params=query)
        assert page.status_code == 200, page.text
        rows.extend(page.json()["items"])
        if not page.json()["page_info"]["has_next_page"]:
            return rows
        after = page.json()["page_info"]["end_cursor"]


async def test_loyalty_tiers__create_read_page_update_delete(
    project_client: httpx.AsyncClient,
) -> None:
    await identified(
        project_client,
        {
            "low": {"total_order_value": 50, "email": "low@example.com"},
            "mid": {"total_order_value": 150, "email": "mid@example.com"},
            "top": {"total_order_value": 600, "email": "top@example.com"},
            "none": {"email": "none@example.com"},
        },
    )
    created = await project_client.post(
        "/v1/audiences/loyalty-tiers",
        json={"name": "Loyalty", "metric": "total_order_value", "tiers": TIERS},
    )
    assert created.status_code == 201, created.text
    group = created.json()
    group_id = group["id"]
    assert group_id.startswith("grp_")
    assert [t["name"] for t in group["tiers"]] == ["Bronze", "Silver", "Gold"]
    tier_ids = {t["name"]: t["audience_id"] for t in group["tiers"]}
    assert {a["id"] for a in group["audiences"]} == set(tier_ids.values())
    assert all(a["group_id"] == group_id for a in group["audiences"])
    for audience_id in tier_ids.values():
        await wait_for_count(project_client, audience_id, 1)

    members = await all_members(project_client, f"/v1/audiences/groups/{group_id}/members")
    assert sorted(m["user_id"] for m in members) == ["low", "mid", "top"]  # each exactly once
    assert all(m["joined_at"] for m in members), members  # when each joined its tier
    by_user = {m["user_id"]: m["audience_id"] for m in members}
    assert by_user == {
        "low": tier_ids["Bronze"],
        "mid": tier_ids["Silver"],
        "top": tier_ids["Gold"],
    }
    gold_only = await all_members(
        project_client, f"/v1/audiences/groups/{group_id}/members", audience_id=tier_ids["Gold"]
    )
    assert [m["user_id"] for m in gold_only] == ["top"]
    searched = await all_members(
        project_client, f"/v1/audiences/groups/{group_id}/members", search="MID@"
    )
    assert [m["email"] for m in searched] == ["mid@example.com"]
    outsider = await project_client.get(
        f"/v1/audiences/groups/{group_id}/members", params={"audience_id": "aud_elsewhere"}
    )
    assert_error(outsider, 404, "not_found")
    tampered = await project_client.get(
        f"/v1/audiences/groups/{group_id}/members", params={"after": "bm90LWEtY3Vyc29y"}
    )
    assert_error(tampered, 400, "invalid_cursor")

    updated = await project_client.put(
        f"/v1/audiences/loyalty-tiers/{group_id}",
        json={
            "tiers": [
                {"name": "Bronze", "min": 0, "max": 100},
                {"name": "Silver", "min": 100, "max": 1000},
                {"name": "Platinum", "min": 1000},
            ]
        },
    )
    assert updated.status_code == 200, updated.text
    new_ids = {t["name"]: t["audience_id"] for t in updated.json()["tiers"]}
    assert new_ids["Bronze"] == tier_ids["Bronze"]
    assert new_ids["Silver"] == tier_ids["Silver"]
    assert "Gold" not in new_ids
    gone = await project_client.get(f"/v1/audiences/{tier_ids['Gold']}")
    assert_error(gone, 404, "not_found")
    await wait_for_count(project_client, new_ids["Silver"], 2)
    await wait_for_count(project_client, new_ids["Platinum"], 0)

    deleted = await project_client.delete(f"/v1/audiences/groups/{group_id}")
    assert deleted.status_code == 204
    assert_error(await project_client.get(f"/v1/audiences/groups/{group_id}"), 404, "not_found")
    for audience_id in new_ids.values():
        assert_error(await project_client.get(f"/v1/audiences/{audience_id}"), 404, "not_found")


@pytest.mark.parametrize(
    ("tiers", "code"),
    [
        ([{"name": "A", "min": 0, "max": 100}, {"name": "B", "min": 50}], "tiers_overlap"),
        ([{"name": "A", "min": 0}, {"name": "B", "min": 10, "max": 20}], "tiers_overlap"),
        ([{"name": "A", "min": 10, "max": 10}], "invalid_tier"),
        ([{"name": "A", "min": 0, "max": 5}, {"name": "A", "min": 5}], "duplicate_tier_names"),
        ([], "invalid_request"),
    ],
)
async def test_loyalty_tiers__bad_tiers__400(
    project_client: httpx.AsyncClient, tiers: list[dict[str, Any]], code: str
) -> None:
    response = await project_client.post(
        "/v1/audiences/loyalty-tiers", json={"name": "L", "metric": "total_orders", "tiers": tiers}
    )
    assert_error(response, 400, code)


async def test_loyalty_tiers__metric_outside_the_list__400(
    project_client: httpx.AsyncClient,
) -> None:
    response = await project_client.post(
        "/v1/audiences/loyalty-tiers",
        json={"name": "L", "metric": "plan", "tiers": [{"name": "A", "min": 0}]},
    )
    assert_error(response, 400, "invalid_request")
    metadata = await project_client.post(
        "/v1/audiences/loyalty-tiers",
        json={"name": "L", "metric": "metadata.points", "tiers": [{"name": "A", "min": 0}]},
    )
    assert metadata.status_code == 201, metadata.text


async def test_groups__other_project__404_everywhere(
    project_client: httpx.AsyncClient, other_project_client: httpx.AsyncClient
) -> None:
    created = await project_client.post(
        "/v1/audiences/loyalty-tiers",
        json={"name": "L", "metric": "total_orders", "tiers": [{"name": "A", "min": 1}]},
    )
    group_id = created.json()["id"]
    for method, path, body in [
        ("GET", f"/v1/audiences/groups/{group_id}", None),
        ("GET", f"/v1/audiences/groups/{group_id}/members", None),
        ("DELETE", f"/v1/audiences/groups/{group_id}", None),
        ("PUT", f"/v1/audiences/loyalty-tiers/{group_id}", {"tiers": [{"name": "A", "min": 2}]}),
    ]:
        response = await other_project_client.request(method, path, json=body)
        assert_error(response, 404, "not_found")
    assert (await project_client.get(f"/v1/audiences/groups/{group_id}")).status_code == 200


async def test_segments__uuid_sequence_and_computed_size(
    project_client: httpx.AsyncClient,
) -> None:
    await identified(
        project_client,
        {
            "s1": {"city": "Seoul", "gender": "F"},
            "s2": {"city": "Busan", "gender": "F"},
            "s3": {"city": "Seoul", "gender": "M"},
        },
    )
    owner = str(uuid.uuid4())
    first = await project_client.post(
        "/v1/audiences/segments",
        json={
            "management_type": "selfmanaged",
            "name": "Women in Seoul or Busan",
            "owner_id": owner,
            "properties": {"city": ["Seoul", "Busan"], "gender": ["F"]},
            "approximated_size": 999,
        },
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert uuid.UUID(body["id"])
    assert body["no"] == 1
    assert body["owner_id"] == owner
    assert body["approximated_size"] == 2
    assert body["properties"] == {"city": ["Seoul", "Busan"], "gender": ["F"]}
    assert set(body) >= {"created_at", "updated_at", "deprecated_properties", "description"}
    second = await project_client.post(
        "/v1/audiences/segments",
        json={"management_type": "systemmanaged", "name": "Everyone", "owner_id": owner},
    )
    assert second.json()["no"] == 2
    assert second.json()["approximated_size"] == 3
    await wait_for_count(project_client, body["id"], 2)
    as_audience = await project_client.get(f"/v1/audiences/{body['id']}")
    assert as_audience.json()["name"] == "Women in Seoul or Busan"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"owner_id": "not-a-uuid"}, "invalid_request"),
        ({"management_type": "other"}, "invalid_request"),
        ({"colour": "blue"}, "unknown_fields"),
        ({"properties": {"city": []}}, "invalid_rule"),
    ],
)
async def test_segments__bad_input__400(
    project_client: httpx.AsyncClient, change: dict[str, Any], code: str
) -> None:
    payload = {"management_type": "selfmanaged", "name": "S", "owner_id": str(uuid.uuid4())}
    response = await project_client.post("/v1/audiences/segments", json={**payload, **change})
    assert_error(response, 400, code)
