"""Datasets (seed 001 `type: dataset`): CSV imports keyed by user, rules on dataset fields."""

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.integration.helpers import wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.sync_integration]

# Upper bounds, not timings: the evaluator and the sync worker may still be busy elsewhere.
TIMEOUT_S = 120


async def wait_done(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not finish: {body}")


async def wait_user(
    client: httpx.AsyncClient, user_id: str, check: Any = lambda body: True
) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/users/{user_id}")
        if response.status_code == 200:
            body = response.json()
            if check(body):
                return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"user {user_id} never matched: {body}")


async def wait_members(client: httpx.AsyncClient, audience_id: str, expected: set[str]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    members: set[str] = set()
    while time.monotonic() < deadline:
        page = (await client.get(f"/v1/audiences/{audience_id}/members?first=100")).json()
        members = {item["user_id"] for item in page["items"]}
        if members == expected:
            # Each member says when it joined (the evaluator stored it with the membership).
            assert all(item["joined_at"] for item in page["items"]), page
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"members of {audience_id} stayed {members}, expected {expected}")


async def import_csv(
    client: httpx.AsyncClient, name: str, body: str, **params: str
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/datasets/{name}/import",
        params=params,
        files={"file": (f"{name}.csv", body.encode(), "text/csv")},
    )
    assert response.status_code == 202, response.text
    started = response.json()
    return await wait_done(client, f"/v1/datasets/{name}/imports/{started['import_id']}")


def dataset_filter(*conditions: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "match": "all",
        "rules": [
            {"type": "trait", "field": field, "operator": operator, "value": value}
            for field, operator, value in conditions
        ],
    }


async def test_dataset__imported_by_email_and_user_id__rules_select_the_right_members(
    project_client: httpx.AsyncClient,
) -> None:
    identified = await project_client.post(
        "/v1/identify",
        json={
            "batch": [
                {"user_id": "u1", "traits": {"email": "ann@example.com", "plan": "pro"}},
                {"user_id": "u2", "traits": {"email": "bob@example.com"}},
                {"user_id": "u3", "traits": {"email": "cy@example.com"}},
            ]
        },
    )
    assert identified.status_code == 202, identified.text
    for user_id in ("u1", "u2", "u3"):
        await wait_user(project_client, user_id)

    scores = await import_csv(
        project_client,
        "scores",
        "email,LTV,Tier,churned,scored_at\n"
        "ann@example.com,120,gold,false,2025-01-31\n"
        "BOB@example.com ,40.5,silver,true,2025-02-01\n"
        "nobody@example.com,10,bronze,false,\n"
        "not-an-email,5,x,false,\n"
        "cy@example.com,7\n",
    )

    assert scores["status"] == "completed", scores
    assert (scores["rows_total"], scores["rows_imported"], scores["rows_failed"]) == (5, 2, 3)
    assert scores["key"] == "email"
    assert scores["fields"] == ["ltv", "tier", "churned", "scored_at"]
    assert scores["errors"] == [
        {"row": 4, "message": "unknown user"},
        {"row": 5, "message": "invalid email 'not-an-email'"},
        {"row": 6, "message": "expected 5 fields, found 2"},
    ]

    crm = await import_csv(project_client, "crm", "user_id,segment\nu1,smb\nu3,enterprise\n")
    assert (crm["rows_imported"], crm["rows_failed"]) == (2, 0)

    # Both datasets' fields sit side by side on the user, next to the user's own traits.
    u1 = await wait_user(project_client, "u1", lambda b: "crm" in b["traits"].get("dataset", {}))
    assert u1["traits"]["plan"] == "pro"
    scored_at = u1["traits"]["dataset"]["scores"].pop("scored_at")
    assert scored_at.startswith("2025-01-31T00:00:00"), scored_at
    assert u1["traits"]["dataset"] == {
        "scores": {
            "ltv": 120,
            "tier": "gold",
            "churned": False,
        },
        "crm": {"segment": "smb"},
    }

    high_value = await project_client.post(
        "/v1/audiences",
        json={
            "name": "High value SMB",
            "type": "dataset",
            "filter": dataset_filter(
                ("dataset.scores.ltv", "gt", 100), ("dataset.crm.segment", "is", "smb")
            ),
        },
    )
    assert high_value.status_code == 201, high_value.text
    assert high_value.json()["refresh_schedule"] == "weekly"
    churned = await project_client.post(
        "/v1/audiences",
        json={
            "name": "Churned",
            "type": "dataset",
            "criteria": "Users with dataset.scores.churned = true",
        },
    )
    assert churned.status_code == 201, churned.text
    await wait_ready(project_client, high_value.json()["id"], timeout=TIMEOUT_S)
    await wait_members(project_client, high_value.json()["id"], {"u1"})
    await wait_members(project_client, churned.json()["id"], {"u2"})

    # A later import of the same dataset updates the audience as it lands.
    again = await import_csv(project_client, "scores", "user_id,ltv\nu3,500\n")
    assert again["rows_imported"] == 1
    crm_smb = await import_csv(project_client, "crm", "user_id,segment\nu3,smb\n")
    assert crm_smb["rows_imported"] == 1
    await wait_members(project_client, high_value.json()["id"], {"u1", "u3"})

    dataset = (await project_client.get("/v1/datasets/scores")).json()
    assert dataset["fields"] == ["churned", "ltv", "scored_at", "tier"]
    listed = (await project_client.get("/v1/datasets")).json()["items"]
    assert [d["name"] for d in listed] == ["crm", "scores"]


async def test_dataset__keyed_by_external_id__matches_linked_users_and_user_ids(
    project_client: httpx.AsyncClient,
) -> None:
    await project_client.post(
        "/v1/identify",
        json={
            "batch": [
                {"user_id": "u5", "traits": {"external_id": "crm-5"}},
                {"user_id": "crm-6", "traits": {"plan": "free"}},
            ]
        },
    )
    await wait_user(project_client, "u5")
    await wait_user(project_client, "crm-6")

    done = await import_csv(
        project_client,
        "ext",
        "external_id,user_id,score\ncrm-5,ignored,9\ncrm-6,,3\ncrm-7,,1\n",
        key="external_id",
    )

    assert (done["rows_imported"], done["rows_failed"]) == (2, 1), done
    assert done["errors"] == [{"row": 4, "message": "unknown user"}]
    assert done["fields"] == ["user_id", "score"]
    u5 = await wait_user(project_client, "u5", lambda b: "dataset" in b["traits"])
    assert u5["traits"]["dataset"]["ext"] == {"user_id": "ignored", "score": 9}


async def test_dataset__bad_uploads__clear_400s(project_client: httpx.AsyncClient) -> None:
    async def post(name: str, body: bytes, content_type: str = "text/csv", **params: str) -> Any:
        return await project_client.post(
            f"/v1/datasets/{name}/import",
            content=body,
            headers={"content-type": content_type},
            params=params,
        )

    cases = [
        (await post("scores", b"name,ltv\nann,1\n"), 400, "key_column_missing"),
        (await post("scores", b""), 400, "header_required"),
        (await post("Bad-Name", b"user_id,x\nu,1\n"), 400, "invalid_dataset_name"),
        (await post("scores", b"user_id,x\n", key="external_id"), 400, "key_column_missing"),
        (await post("scores", b"user_id,ltv,LTV\n"), 400, "duplicate_columns"),
        (await post("scores", b"user_id\nu1\n"), 400, "no_fields"),
        (await post("scores", b"user_id,!!!\nu1,1\n"), 400, "invalid_columns"),
        (await post("scores", b"user_id,x\n", key="phone"), 400, "invalid_request"),
        (await post("scores", b'{"a": 1}', "application/json"), 415, "unsupported_media_type"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code, response.text
        assert response.json()["error"]["message"]

    assert (await project_client.get("/v1/datasets/scores")).status_code == 404
    missing = await project_client.get("/v1/datasets/scores/imports/imp_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_dataset_audience__rule_must_name_existing_dataset_fields(
    project_client: httpx.AsyncClient, other_project_client: httpx.AsyncClient
) -> None:
    await import_csv(project_client, "scores", "user_id,ltv\nu1,5\n")

    async def create(criteria: str) -> httpx.Response:
        return await project_client.post(
            "/v1/audiences", json={"name": "d", "type": "dataset", "criteria": criteria}
        )

    for criteria, code in [
        ("Users with plan=pro", "dataset_rule_required"),
        ("Users with dataset.nothing.ltv > 1", "unknown_dataset"),
        ("Users with dataset.scores.tier = gold", "unknown_dataset_field"),
    ]:
        response = await create(criteria)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code
    ok = await create("Users with dataset.scores.ltv > 1")
    assert ok.status_code == 201, ok.text

    changed = await project_client.put(
        f"/v1/audiences/{ok.json()['id']}", json={"criteria": "Users with dataset.x.y = 1"}
    )
    assert changed.status_code == 400
    assert changed.json()["error"]["code"] == "unknown_dataset"

    # Another project neither sees the dataset nor may use it.
    assert (await other_project_client.get("/v1/datasets/scores")).status_code == 404
    assert (await other_project_client.get("/v1/datasets")).json()["items"] == []
    foreign = await other_project_client.post(
        "/v1/audiences",
        json={"name": "d", "type": "dataset", "criteria": "Users with dataset.scores.ltv > 1"},
    )
    assert foreign.status_code == 400
    assert foreign.json()["error"]["code"] == "unknown_dataset"
