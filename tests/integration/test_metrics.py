"""Every service's /metrics after real traffic: the series exist and moved where traffic went."""

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from audience_shared.topics import Topic
from tests.fakes.klaviyo import FakeKlaviyo, running
from tests.integration.conftest import Stack
from tests.integration.helpers import produce, wait_for_count

pytestmark = pytest.mark.integration

KLAVIYO_KEY = "pk_test_fake_key_1234"
Labels = frozenset[tuple[str, str]]


class Scrape:
    """One scrape of a service: sample values by name and labels, and the declared families."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, Labels], float] = {}
        self.families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, have), v in self.values.items() if n == name and wanted <= have)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(have)[label] for (n, have) in self.values if n == name and label in dict(have)}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def urls(stack: Stack) -> dict[str, str]:
    return {name: f"http://127.0.0.1:{s.port}" for name, s in stack.services.items()}


@pytest.fixture(scope="module")
def klaviyo(stack: Stack) -> Iterator[FakeKlaviyo]:
    port = urlparse(stack.env["AUDIENCES_KLAVIYO_BASE_URL"]).port
    with running(FakeKlaviyo(), port=port) as fake:
        yield fake


async def test_api_metrics__requests_by_route_template_and_status(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    before = await scrape(urls(stack)["api"])
    created = await project_client.post(
        "/v1/audiences", json={"name": "Metrics", "criteria": "Users with plan=metrics"}
    )
    audience_id = created.json()["id"]
    for _ in range(3):
        assert (await project_client.get(f"/v1/audiences/{audience_id}")).status_code == 200
    missing = await project_client.get("/v1/audiences/aud_does_not_exist")
    assert missing.status_code == 404
    sent = await project_client.post("/v1/identify", json={"user_id": "m1", "traits": {"a": 1}})
    assert sent.status_code == 202

    after = await scrape(urls(stack)["api"])

    count = "audiences_api_request_seconds_count"
    route = "/v1/audiences/{audience_id}"
    moved = after.total(count, route=route, method="GET", status="200") - before.total(
        count, route=route, method="GET", status="200"
    )
    assert moved >= 3
    assert after.total(count, route=route, status="404") > before.total(
        count, route=route, status="404"
    )
    assert after.total(count, route="/v1/audiences", method="POST", status="201") > 0
    assert after.total("audiences_api_request_seconds_bucket", route=route, le="+Inf") >= 3
    # Templates, never raw paths: ids would explode the label set.
    assert not any(audience_id in r for r in after.label_values(count, "route"))
    assert after.total("audiences_api_events_accepted_total") > before.total(
        "audiences_api_events_accepted_total"
    )


async def test_evaluator_metrics__consumed_batches_changes_lag_and_dead_letters(
    stack: Stack, project_client: httpx.AsyncClient
) -> None:
    url = urls(stack)["evaluator"]
    before = await scrape(url)
    created = await project_client.post(
        "/v1/audiences", json={"name": "Gold", "criteria": "Users with plan=gold"}
    )
    audience_id = created.json()["id"]
    batch = [{"user_id": f"gold-{n}", "traits": {"plan": "gold"}} for n in range(3)]
    assert (await project_client.post("/v1/identify", json={"batch": batch})).status_code == 202
    await wait_for_count(project_client, audience_id, 3, timeout=30)
    # A record no schema accepts: it must be dead-lettered, not wedge the partition.
    await produce(stack.env["AUDIENCES_KAFKA_BOOTSTRAP"], [(b"poison", b"{not json")])

    deadline = time.monotonic() + 30
    while True:
        after = await scrape(url)
        lag_partitions = after.label_values("audiences_evaluator_consumer_lag", "partition")
        dead = after.total("audiences_evaluator_dead_letters_total", topic=Topic.USER_EVENTS)
        if (dead > before.total("audiences_evaluator_dead_letters_total") and lag_partitions) or (
            time.monotonic() > deadline
        ):
            break
        await asyncio.sleep(0.5)

    def grew(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert grew("audiences_evaluator_events_consumed_total", topic=Topic.USER_EVENTS) >= 4
    assert grew("audiences_evaluator_batch_size_count") >= 1
    assert grew("audiences_evaluator_batch_size_sum") >= 3
    assert grew("audiences_evaluator_batch_seconds_count") >= 1
    assert grew("audiences_evaluator_membership_changes_total", type="membership.entered") >= 3
    assert grew("audiences_evaluator_dead_letters_total", topic=Topic.USER_EVENTS) >= 1
    assert lag_partitions == {str(p) for p in range(6)}
    # The gold users' profiles were written, so they are cached (decoded: the cache is far from
    # full in a test stack).
    assert after.total("audiences_evaluator_profile_cache_entries", form="decoded") >= 3
    # The sweeper scanned the store at startup. Collections are timed from startup on (how many
    # ran by now depends on the allocations, so only the family is checked).
    assert after.total("audiences_evaluator_sweep_scan_seconds_count") >= 1
    assert "audiences_evaluator_gc_pause_seconds" in after.families
    # Declared even before the first outage, so alerts can be written against it.
    assert "audiences_evaluator_transient_errors" in after.families


async def test_sync_metrics__klaviyo_pages_pulled_and_429s_met(
    stack: Stack, project_client: httpx.AsyncClient, klaviyo: FakeKlaviyo
) -> None:
    url = urls(stack)["sync"]
    before = await scrape(url)
    list_id = klaviyo.add_list("Metrics list")
    klaviyo.add_profiles(list_id, [{"email": f"k{n}@example.com"} for n in range(5)])
    connected = await project_client.post("/v1/integrations/klaviyo", json={"api_key": KLAVIYO_KEY})
    assert connected.status_code == 201, connected.text
    # The sync service's first page request is throttled once (Retry-After defaults to 1 s).
    klaviyo.fail(times=1, status=429, path_contains=f"/api/lists/{list_id}/profiles")
    imported = await project_client.post(
        "/v1/audiences/import/klaviyo", json={"list_ids": [list_id]}
    )
    assert imported.status_code == 201, imported.text
    (audience,) = imported.json()["items"]

    deadline = time.monotonic() + 120
    run: dict[str, object] = {}
    while time.monotonic() < deadline:
        run = (await project_client.get(f"/v1/audiences/{audience['id']}/sync")).json()["run"] or {}
        if run.get("status") in ("completed", "failed"):
            break
        await asyncio.sleep(0.5)
    assert run.get("status") == "completed", run
    after = await scrape(url)

    assert (
        after.total("audiences_sync_klaviyo_pages_total")
        - before.total("audiences_sync_klaviyo_pages_total")
        >= 1
    )
    assert (
        after.total("audiences_sync_klaviyo_throttled_total")
        - before.total("audiences_sync_klaviyo_throttled_total")
        >= 1
    )
    assert after.total("audiences_sync_klaviyo_requests_total", outcome="throttled") >= 1
    assert after.total("audiences_sync_jobs_total", kind="sync", status="completed") >= 1
