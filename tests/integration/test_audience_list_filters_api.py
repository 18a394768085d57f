"""GET /v1/audiences filters (kind, status, search) and relations (include=), through HTTP."""

from typing import Any

import httpx
import pytest

from tests.integration.helpers import wait_ready

pytestmark = pytest.mark.integration


async def create(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/v1/audiences", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/v1/audiences", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def all_pages(client: httpx.AsyncClient, **params: Any) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        response = await client.get(
            "/v1/audiences", params={**params, **({"after": after} if after else {})}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        ids.extend(item["id"] for item in page["items"])
        if not page["page_info"]["has_next_page"]:
            return ids
        after = page["page_info"]["end_cursor"]


async def test_list__kind_search_status__narrow_the_page(
    project_client: httpx.AsyncClient,
) -> None:
    vip = await create(project_client, name="VIP buyers", criteria="Users with plan=vip")
    churn = await create(project_client, name="Churning vips", criteria="Users with plan=old")
    dots = await create(project_client, name="a.b", criteria="Users with plan=a")
    other = await create(project_client, name="axb", criteria="Users with plan=b")
    static = await create(project_client, name="Newsletter VIP list", kind="static")
    dynamic = {vip, churn, dots, other}
    for audience_id in dynamic:
        await wait_ready(project_client, audience_id)

    assert set(await listed(project_client, kind="static")) == {static}
    assert set(await listed(project_client, kind="dynamic")) == dynamic
    assert set(await listed(project_client, search="vip")) == {vip, churn, static}
    assert set(await listed(project_client, search="VIP", kind="dynamic")) == {vip, churn}
    # The search is literal text, not a pattern.
    assert await listed(project_client, search="a.b") == [dots]
    assert await listed(project_client, search="zzz") == []

    ready = await all_pages(project_client, status="ready", kind="dynamic", first=1)
    assert sorted(ready) == sorted(dynamic), "paging by status lost or repeated an audience"
    assert await listed(project_client, status="failed") == []
    statuses = {
        item["id"]: item["status"]
        for item in (await project_client.get("/v1/audiences")).json()["items"]
    }
    for status in set(statuses.values()):
        assert set(await listed(project_client, status=status)) == {
            audience_id for audience_id, s in statuses.items() if s == status
        }

    await project_client.delete(f"/v1/audiences/{other}")
    assert set(await listed(project_client, kind="dynamic")) == {vip, churn, dots}


async def test_include__rules_imports_sync_source(project_client: httpx.AsyncClient) -> None:
    rule_audience = await create(
        project_client,
        name="Premium",
        filter={
            "match": "all",
            "rules": [{"type": "trait", "field": "plan", "operator": "is", "value": "premium"}],
        },
    )
    static = await create(project_client, name="Uploaded", kind="static")
    uploaded = await project_client.post(
        f"/v1/audiences/{static}/import",
        content=b"user_id,email\nu1,u1@example.com\n",
        headers={"content-type": "text/csv"},
    )
    assert uploaded.status_code == 202, uploaded.text

    plain = (await project_client.get(f"/v1/audiences/{rule_audience}")).json()
    assert not {"rules", "imports", "sync_source"} & set(plain)

    full = (
        await project_client.get(
            f"/v1/audiences/{rule_audience}", params={"include": "rules,imports,sync_source"}
        )
    ).json()
    assert full["rules"]["criteria"] == "Users with plan = premium"
    assert full["rules"]["input"]["form"] == "filter"
    assert full["rules"]["rule"] == full["rule"]
    assert full["imports"] == []
    assert full["sync_source"] is None

    items = (await project_client.get("/v1/audiences", params={"include": "imports"})).json()[
        "items"
    ]
    by_id = {item["id"]: item for item in items}
    assert [i["import_id"] for i in by_id[static]["imports"]] == [uploaded.json()["import_id"]]
    assert by_id[rule_audience]["imports"] == []
    assert "rules" not in by_id[static]
    static_rules = (
        await project_client.get(f"/v1/audiences/{static}", params={"include": "rules"})
    ).json()
    assert static_rules["rules"] is None


async def test_list__bad_filters__400_in_the_error_shape(
    project_client: httpx.AsyncClient, other_project_client: httpx.AsyncClient
) -> None:
    audience_id = await create(project_client, name="Mine", criteria="Users with plan=x")
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"kind": "bogus"}, "invalid_request"),
        ({"status": "archived"}, "invalid_request"),
        ({"status": "nope"}, "invalid_request"),
        ({"search": ""}, "invalid_request"),
        ({"search": "x" * 201}, "invalid_request"),
        ({"include": "rules,bogus"}, "invalid_include"),
        ({"first": 0}, "invalid_request"),
        ({"after": "not-a-cursor"}, None),
    ]
    for params, code in cases:
        response = await project_client.get("/v1/audiences", params=params)
        assert response.status_code == 400, (params, response.text)
        error = response.json()["error"]
        assert error["message"]
        if code is not None:
            assert error["code"] == code, (params, error)
    bad_include = await project_client.get(
        f"/v1/audiences/{audience_id}", params={"include": "filters"}
    )
    assert bad_include.status_code == 400
    assert bad_include.json()["error"]["details"] == {"unknown": ["filters"]}

    assert await listed(other_project_client, search="Mine") == []
