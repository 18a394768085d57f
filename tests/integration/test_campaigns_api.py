"""Campaign audiences through HTTP: priority order, first match, entitlements, caps, experiments."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from audience_api import experiments
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

Shift = Callable[[timedelta], None]


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh project's key with a rate limit high enough for the split tests' volume; the
    client's base URL is the project, so paths read like the docs."""
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    ) as admin:
        project = (await admin.post("/v1/projects", json={"name": "campaigns"})).json()
        key = (
            await admin.post(
                "/v1/keys",
                json={
                    "project_id": project["id"],
                    "rate_limit": {"per_second": 100_000, "burst": 100_000},
                },
            )
        ).json()
    async with httpx.AsyncClient(
        base_url=f"{stack.api_url}/v1/projects/{project['id']}",
        headers={"Authorization": f"Bearer {key['key']}"},
        timeout=30,
    ) as client:
        yield client


async def campaign(api: httpx.AsyncClient, **fields: Any) -> str:
    created = await api.post("/campaigns", json={"name": "paywalls", **fields})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def audience(api: httpx.AsyncClient, campaign_id: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "a", "filters": [], **fields}
    created = await api.post(f"/campaigns/{campaign_id}/audiences", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def resolve(
    api: httpx.AsyncClient, campaign_id: str, user_id: str, **request: Any
) -> dict[str, Any]:
    answer = await api.post(
        f"/campaigns/{campaign_id}/resolve", json={"user_id": user_id, **request}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def resolve_many(
    api: httpx.AsyncClient, campaign_id: str, users: list[str]
) -> dict[str, dict[str, Any]]:
    answers: dict[str, dict[str, Any]] = {}
    for start in range(0, len(users), 10):
        chunk = users[start : start + 10]
        replies = await asyncio.gather(*(resolve(api, campaign_id, u) for u in chunk))
        answers.update(zip(chunk, replies, strict=True))
    return answers


async def wait_for_event(
    api: httpx.AsyncClient, stack: Stack, user_id: str, event: str, timeout: float = 30
) -> None:
    """Until the evaluator has folded `event` into the user's profile."""
    async with httpx.AsyncClient(base_url=stack.api_url, headers=api.headers) as root:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            user = await root.get(f"/v1/users/{user_id}")
            if user.status_code == 200 and event in user.json()["events"]:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{event} of {user_id} never reached the profile")


async def root_post(api: httpx.AsyncClient, stack: Stack, path: str, body: Any) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=api.headers) as root:
        response = await root.post(path, json=body)
        assert response.status_code == 202, response.text


async def test_campaign_crud(api: httpx.AsyncClient) -> None:
    campaign_id = await campaign(api)
    listed = (await api.get("/campaigns")).json()["items"]
    assert [c["id"] for c in listed] == [campaign_id]
    updated = await api.put(f"/campaigns/{campaign_id}", json={"status": "paused", "name": "x"})
    assert (updated.json()["status"], updated.json()["name"]) == ("paused", "x")
    bad = await api.put(f"/campaigns/{campaign_id}", json={"status": "archived"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_request"
    assert (await api.delete(f"/campaigns/{campaign_id}")).status_code == 204
    missing = await api.get(f"/campaigns/{campaign_id}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_audiences__priority_order__reorder__bad_reorder_400(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await campaign(api)
    filters = [
        {"field": "country", "operator": "is", "value": "US"},
        {"field": "event_count", "operator": "gte", "value": 50, "conjunction": "and"},
    ]
    first = await audience(api, campaign_id, name="Power Users - US", filters=filters)
    assert first["priority_order"] == 0
    assert first["campaign_id"] == campaign_id
    assert [
        (f["field"], f["operator"], f["value"], f["conjunction"]) for f in first["filters"]
    ] == [
        ("country", "is", "US", "and"),
        ("event_count", "gte", 50, "and"),
    ]
    assert all(f["id"].startswith("flt_") for f in first["filters"])
    second = await audience(api, campaign_id, name="Everyone Else")
    third = await audience(api, campaign_id, name="Third")
    assert (second["priority_order"], third["priority_order"]) == (1, 2)

    path = f"/campaigns/{campaign_id}/audiences"
    listed = (await api.get(path)).json()
    assert [a["id"] for a in listed] == [first["id"], second["id"], third["id"]]
    assert listed[0]["filters"][0]["field"] == "country"

    order = [third["id"], first["id"], second["id"]]
    reordered = await api.put(f"{path}/reorder", json={"order": order})
    assert reordered.status_code == 200, reordered.text
    assert [(a["id"], a["priority_order"]) for a in reordered.json()] == [
        (third["id"], 0),
        (first["id"], 1),
        (second["id"], 2),
    ]
    assert [a["id"] for a in (await api.get(path)).json()] == order

    for bad in (
        order[:2],
        [*order, "aud_unknown"],
        [order[0], order[0], order[1]],
        [order[0], order[1], "aud_unknown"],
    ):
        refused = await api.put(f"{path}/reorder", json={"order": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["code"] == "invalid_order"
    assert [a["id"] for a in (await api.get(path)).json()] == order

    assert (await api.delete(f"{path}/{first['id']}")).status_code == 204
    remaining = (await api.get(path)).json()
    assert [(a["id"], a["priority_order"]) for a in remaining] == [
        (third["id"], 0),
        (second["id"], 1),
    ]
    assert (await audience(api, campaign_id))["priority_order"] == 2


async def test_audience_update__replaces_filters__bad_input_400(api: httpx.AsyncClient) -> None:
    campaign_id = await campaign(api)
    created = await audience(
        api,
        campaign_id,
        filters=[{"field": "country", "operator": "is", "value": "US"}],
        frequency_cap="3/day",
    )
    path = f"/campaigns/{campaign_id}/audiences/{created['id']}"
    updated = await api.put(
        path,
        json={
            "name": "North America",
            "filters": [{"field": "country", "operator": "in", "value": ["US", "CA"]}],
            "frequency_cap": None,
        },
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["name"] == "North America"
    assert [(f["operator"], f["value"]) for f in body["filters"]] == [("in", ["US", "CA"])]
    assert body["filters"][0]["id"] != created["filters"][0]["id"]
    assert body["frequency_cap"] is None
    for bad in (
        {"filters": [{"field": "country", "operator": "starts_with", "value": "U"}]},
        {"frequency_cap": "3/hour"},
        {"unknown": 1},
    ):
        refused = await api.put(path, json=bad)
        assert refused.status_code == 400, bad
        assert set(refused.json()["error"]) >= {"code", "message", "details"}
    too_much = await api.post(
        f"/campaigns/{campaign_id}/audiences",
        json={
            "name": "x",
            "filters": [],
            "experiment": {
                "variants": [
                    {"paywall_id": "a", "traffic_percentage": 60},
                    {"paywall_id": "b", "traffic_percentage": 50},
                ]
            },
        },
    )
    assert too_much.status_code == 400


async def test_resolve__first_match_in_priority_order__profile_traits_and_events(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    campaign_id = await campaign(api)
    us = await audience(
        api,
        campaign_id,
        name="US",
        filters=[{"field": "country", "operator": "is", "value": "US"}],
        paywall_id="pw_us",
    )
    active = await audience(
        api,
        campaign_id,
        name="active",
        filters=[
            {"field": "event_count", "operator": "gte", "value": "2"},
            {"field": "events.app_open.count", "operator": "gte", "value": 2},
        ],
        paywall_id="pw_active",
    )
    everyone = await audience(api, campaign_id, name="everyone", paywall_id="pw_all")
    await root_post(api, stack, "/v1/identify", {"user_id": "u1", "traits": {"country": "US"}})
    await root_post(
        api,
        stack,
        "/v1/events",
        {"batch": [{"user_id": "u1", "event": "app_open"}, {"user_id": "u1", "event": "app_open"}]},
    )
    await wait_for_event(api, stack, "u1", "app_open")
    deadline = time.monotonic() + 30
    while (await resolve(api, campaign_id, "u1"))["audience_id"] != us["id"]:
        assert time.monotonic() < deadline, "u1's traits never reached resolution"
        await asyncio.sleep(0.2)

    # Every audience matches u1: the order alone decides.
    answer = await resolve(api, campaign_id, "u1")
    assert (answer["paywall_id"], answer["reason"], answer["holdout"]) == (
        "pw_us",
        "matched",
        False,
    )
    path = f"/campaigns/{campaign_id}/audiences/reorder"
    await api.put(path, json={"order": [active["id"], us["id"], everyone["id"]]})
    assert (await resolve(api, campaign_id, "u1"))["paywall_id"] == "pw_active"
    await api.put(path, json={"order": [everyone["id"], active["id"], us["id"]]})
    assert (await resolve(api, campaign_id, "u1"))["paywall_id"] == "pw_all"

    await api.put(path, json={"order": [us["id"], active["id"], everyone["id"]]})
    # Request attributes win over traits; an unknown user has only its attributes.
    assert (await resolve(api, campaign_id, "u1", attributes={"country": "DE"}))[
        "paywall_id"
    ] == "pw_active"
    stranger = await resolve(api, campaign_id, "stranger", attributes={"country": "US"})
    assert stranger["paywall_id"] == "pw_us"
    assert (await resolve(api, campaign_id, "stranger"))["paywall_id"] == "pw_all"


async def test_resolve__entitled_user_skipped(api: httpx.AsyncClient, stack: Stack) -> None:
    campaign_id = await campaign(api)
    upsell = await audience(api, campaign_id, entitlement_check="pro", paywall_id="pw_upgrade")
    fallback = await audience(api, campaign_id, paywall_id="pw_other")
    await root_post(
        api, stack, "/v1/identify", {"user_id": "pro_user", "traits": {"entitlements": ["pro"]}}
    )
    deadline = time.monotonic() + 30
    while (answer := await resolve(api, campaign_id, "pro_user"))["audience_id"] != fallback["id"]:
        assert time.monotonic() < deadline, "the entitlement never reached resolution"
        await asyncio.sleep(0.2)
    assert answer["skipped"] == [{"audience_id": upsell["id"], "reason": "entitled"}]
    assert (await resolve(api, campaign_id, "free_user"))["audience_id"] == upsell["id"]
    entitled_now = await resolve(
        api, campaign_id, "free_user", attributes={"entitlements": ["pro", "x"]}
    )
    assert entitled_now["audience_id"] == fallback["id"]


async def test_paused_campaign__resolves_to_nothing(api: httpx.AsyncClient) -> None:
    campaign_id = await campaign(api, status="paused")
    await audience(api, campaign_id, paywall_id="pw")
    answer = await resolve(api, campaign_id, "u1")
    assert answer["audience_id"] is None
    assert answer["paywall_id"] is None
    assert answer["reason"] == "campaign_paused"
    await api.put(f"/campaigns/{campaign_id}", json={"status": "active"})
    assert (await resolve(api, campaign_id, "u1"))["paywall_id"] == "pw"


def at(shift: Shift, moment: datetime) -> None:
    """Set the services' clock to `moment` (the offset drifts by the test's own run time)."""
    shift(moment - datetime.now(UTC))


# Wednesday noon UTC; each case is (cap, still the same period, the next period).
START = datetime(2031, 1, 15, 12, 0, tzinfo=UTC)
CAP_CASES = [
    ("2/day", START + timedelta(hours=11), START + timedelta(hours=12, minutes=1)),
    ("2/week", START + timedelta(days=4, hours=11), START + timedelta(days=4, hours=12, minutes=1)),
    (
        "2/month",
        START + timedelta(days=16, hours=11),
        START + timedelta(days=17, hours=12, minutes=1),
    ),
    ("2/lifetime", START + timedelta(days=3650), None),
]


@pytest.mark.parametrize(("cap", "same_period", "next_period"), CAP_CASES)
async def test_frequency_cap__each_calendar_period__injected_clock(
    api: httpx.AsyncClient,
    clock_shift: Shift,
    cap: str,
    same_period: datetime,
    next_period: datetime | None,
) -> None:
    campaign_id = await campaign(api)
    capped = await audience(api, campaign_id, frequency_cap=cap, paywall_id="pw_capped")
    fallback = await audience(api, campaign_id, paywall_id="pw_fallback")
    at(clock_shift, START)
    shown = [(await resolve(api, campaign_id, "u1"))["paywall_id"] for _ in range(3)]
    assert shown == ["pw_capped", "pw_capped", "pw_fallback"]
    at(clock_shift, same_period)
    still = await resolve(api, campaign_id, "u1")
    assert still["audience_id"] == fallback["id"]
    assert still["skipped"] == [{"audience_id": capped["id"], "reason": "frequency_capped"}]
    assert (await resolve(api, campaign_id, "u2"))["paywall_id"] == "pw_capped"
    if next_period is not None:
        at(clock_shift, next_period)
        assert (await resolve(api, campaign_id, "u1"))["paywall_id"] == "pw_capped"


async def test_frequency_cap__per_session(api: httpx.AsyncClient) -> None:
    campaign_id = await campaign(api)
    await audience(api, campaign_id, frequency_cap="1/session", paywall_id="pw")
    answers = [
        (await resolve(api, campaign_id, "u1", session_id=session))["paywall_id"]
        for session in ("s1", "s1", "s2", "s1", "s2", "s3")
    ]
    assert answers == ["pw", None, "pw", None, None, "pw"]


async def test_frequency_cap__request_id_retries_count_once(api: httpx.AsyncClient) -> None:
    campaign_id = await campaign(api)
    await audience(api, campaign_id, frequency_cap="2/lifetime", paywall_id="pw")
    retries = await asyncio.gather(
        *(resolve(api, campaign_id, "u1", request_id="req-1") for _ in range(4))
    )
    assert [r["paywall_id"] for r in retries] == ["pw"] * 4
    assert (await resolve(api, campaign_id, "u1", request_id="req-2"))["paywall_id"] == "pw"
    assert (await resolve(api, campaign_id, "u1", request_id="req-3"))["paywall_id"] is None
    reused = await api.post(
        f"/campaigns/{campaign_id}/resolve", json={"user_id": "u2", "request_id": "req-1"}
    )
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "request_id_reused"


async def test_experiment__split_matches_assignment__sticky__holdout_sees_nothing(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await campaign(api)
    created = await audience(
        api,
        campaign_id,
        experiment={
            "variants": [
                {"paywall_id": "pw_a", "traffic_percentage": 30},
                {"paywall_id": "pw_b", "traffic_percentage": 30},
            ]
        },
    )
    experiment = created["experiment"]
    assert experiment["holdout_percentage"] == 40
    assert (experiment["confidence_threshold"], experiment["auto_promote"]) == (0.95, False)
    variants = [(v["id"], v["traffic_percentage"]) for v in experiment["variants"]]
    users = [f"user{n}" for n in range(1000)]
    answers = await resolve_many(api, campaign_id, users)
    tally: dict[str | None, int] = {}
    for user_id, answer in answers.items():
        # Exactly the documented hash assignment, so the 10,000-user unit test carries over.
        assert answer["variant_id"] == experiments.assign(experiment["id"], user_id, variants)
        tally[answer["variant_id"]] = tally.get(answer["variant_id"], 0) + 1
        assert answer["experiment_id"] == experiment["id"]
        if answer["holdout"]:
            assert (answer["paywall_id"], answer["reason"]) == (None, "holdout")
            assert answer["audience_id"] == created["id"]
    # 1,000 users: one standard deviation is at most 1.6 points, so 5 points is far out.
    for variant_id, percentage in [*variants, (None, 40)]:
        assert abs(100 * tally.get(variant_id, 0) / len(users) - percentage) <= 5, tally

    again = await resolve_many(api, campaign_id, users[:200])
    assert {u: a["variant_id"] for u, a in again.items()} == {
        u: answers[u]["variant_id"] for u in users[:200]
    }
    results = (await api.get(f"/experiments/{experiment['id']}/results")).json()
    exposed = {row["variant_id"]: row["exposures"] for row in results["variants"]}
    assert exposed == {v: tally.get(v, 0) for v, _ in variants}
    assert results["holdout"]["exposures"] == tally.get(None, 0)


async def test_experiment__pause_serves_control__resume_keeps_assignment(
    api: httpx.AsyncClient,
) -> None:
    campaign_id = await campaign(api)
    created = await audience(
        api,
        campaign_id,
        experiment={
            "variants": [
                {"paywall_id": "pw_a", "traffic_percentage": 50},
                {"paywall_id": "pw_b", "traffic_percentage": 50},
            ]
        },
    )
    experiment_id = created["experiment"]["id"]
    users = [f"u{n}" for n in range(60)]
    before = await resolve_many(api, campaign_id, users)
    paused = await api.post(f"/experiments/{experiment_id}/pause")
    assert paused.json()["status"] == "paused"
    during = await resolve_many(api, campaign_id, users)
    assert {a["paywall_id"] for a in during.values()} == {"pw_a"}
    await api.post(f"/experiments/{experiment_id}/resume")
    after = await resolve_many(api, campaign_id, users)
    assert {u: a["variant_id"] for u, a in after.items()} == {
        u: a["variant_id"] for u, a in before.items()
    }


async def two_arm_experiment(
    api: httpx.AsyncClient, campaign_id: str, **fields: Any
) -> dict[str, Any]:
    created = await audience(
        api,
        campaign_id,
        experiment={
            "variants": [
                {"paywall_id": "pw_control", "traffic_percentage": 50},
                {"paywall_id": "pw_new", "traffic_percentage": 50},
            ],
            **fields,
        },
    )
    return dict(created["experiment"])


async def test_results__conversions_after_exposure__probability_named(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    campaign_id = await campaign(api)
    experiment = await two_arm_experiment(api, campaign_id)
    control, challenger = (v["id"] for v in experiment["variants"])
    # Bought before being exposed: never a conversion.
    await root_post(api, stack, "/v1/events", {"user_id": "early", "event": "purchase"})
    await wait_for_event(api, stack, "early", "purchase")
    users = ["early", *(f"u{n}" for n in range(60))]
    answers = await resolve_many(api, campaign_id, users)
    by_variant = {
        v: [u for u, a in answers.items() if a["variant_id"] == v] for v in (control, challenger)
    }
    buyers = by_variant[challenger][::2] + by_variant[control][:1]
    buyers = [u for u in buyers if u != "early"]
    await root_post(
        api,
        stack,
        "/v1/events",
        {"batch": [{"user_id": u, "event": "purchase"} for u in buyers]},
    )
    expected = {v: len([u for u in buyers if u in by_variant[v]]) for v in (control, challenger)}
    deadline = time.monotonic() + 40
    while True:
        report = (await api.get(f"/experiments/{experiment['id']}/results")).json()
        rows = {row["variant_id"]: row for row in report["variants"]}
        if {v: rows[v]["conversions"] for v in rows} == expected:
            break
        assert time.monotonic() < deadline, (rows, expected)
        await asyncio.sleep(0.3)
    assert report["method"] == "bayesian_beta_binomial"
    assert report["control_variant_id"] == control
    assert report["conversion_event"] == "purchase"
    for variant_id in (control, challenger):
        row = rows[variant_id]
        assert row["exposures"] == len(by_variant[variant_id])
        assert row["rate"] == pytest.approx(row["conversions"] / row["exposures"], abs=1e-6)
    assert rows[control]["probability_to_beat_control"] is None
    assert 0.5 < rows[challenger]["probability_to_beat_control"] <= 1
    assert report["promotion"] is None


async def test_auto_promote__winner_gets_all_traffic__when_and_why_recorded(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    campaign_id = await campaign(api)
    experiment = await two_arm_experiment(
        api, campaign_id, auto_promote=True, min_exposures=15, confidence_threshold=0.95
    )
    challenger = experiment["variants"][1]["id"]
    users = [f"u{n}" for n in range(80)]
    answers = await resolve_many(api, campaign_id, users)
    buyers = [u for u, a in answers.items() if a["variant_id"] == challenger]
    started = datetime.now(UTC)
    await root_post(
        api,
        stack,
        "/v1/events",
        {"batch": [{"user_id": u, "event": "purchase"} for u in buyers]},
    )
    deadline = time.monotonic() + 40
    while True:
        report = (await api.get(f"/experiments/{experiment['id']}/results")).json()
        if report["promotion"] is not None:
            break
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.3)
    promotion = report["promotion"]
    assert promotion["variant_id"] == challenger
    assert promotion["by"] == "auto_promote"
    assert promotion["probability_to_beat_control"] >= 0.95
    assert datetime.fromisoformat(promotion["at"]) >= started - timedelta(seconds=1)
    assert "confidence threshold 0.95" in promotion["reason"]
    assert report["status"] == "promoted"
    fetched = (await api.get(f"/experiments/{experiment['id']}")).json()
    assert fetched["promotion"] == promotion
    everyone = await resolve_many(api, campaign_id, users)
    assert {a["paywall_id"] for a in everyone.values()} == {"pw_new"}
    refused = await api.post(f"/experiments/{experiment['id']}/resume")
    assert refused.status_code == 409


async def test_manual_promote__and_unknown_ids_404(api: httpx.AsyncClient) -> None:
    campaign_id = await campaign(api)
    experiment = await two_arm_experiment(api, campaign_id)
    control = experiment["variants"][0]["id"]
    unknown = await api.post(
        f"/experiments/{experiment['id']}/promote", json={"variant_id": "var_nope"}
    )
    assert unknown.status_code == 404
    promoted = await api.post(
        f"/experiments/{experiment['id']}/promote", json={"variant_id": control}
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["promotion"]["by"] == "manual"
    answers = await resolve_many(api, campaign_id, [f"u{n}" for n in range(20)])
    assert {a["paywall_id"] for a in answers.values()} == {"pw_control"}
    assert (await api.get("/experiments/exp_nope/results")).status_code == 404
    # Deleting the audience takes its experiment with it.
    await api.delete(f"/campaigns/{campaign_id}/audiences/{experiment['audience_id']}")
    assert (await api.get(f"/experiments/{experiment['id']}")).status_code == 404
