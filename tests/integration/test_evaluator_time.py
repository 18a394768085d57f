"""Time-driven entries and exits with no new event, and counters rebuilt from past events."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.integration.helpers import produce, user_event, wait_for_count, wait_ready

pytestmark = pytest.mark.integration

Shift = Callable[[timedelta], None]


async def create(client: httpx.AsyncClient, criteria: str) -> str:
    response = await client.post("/v1/audiences", json={"name": "T", "criteria": criteria})
    assert response.status_code == 201, response.text
    await wait_ready(client, response.json()["id"])
    return str(response.json()["id"])


async def members(client: httpx.AsyncClient, audience_id: str) -> set[str]:
    response = await client.get(f"/v1/audiences/{audience_id}/members", params={"first": 100})
    assert response.status_code == 200, response.text
    return {item["user_id"] for item in response.json()["items"]}


def track(project: str, user: str, event: str, n: int, **properties: object) -> tuple[bytes, bytes]:
    return user_event(
        project,
        user,
        type="track",
        event=event,
        event_id=f"{user}-{event}-{n}",
        timestamp=datetime.now(UTC).isoformat(),
        properties=properties,
    )


async def test_time_passing__exits_and_entries_land_without_new_events(
    project_client: httpx.AsyncClient, kafka_bootstrap: str, clock_shift: Shift
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    active = await create(project_client, "Users who did app_open in the last 7 days")
    lapsed = await create(project_client, "Users who did not purchase in the last 30 days")
    few = await create(
        project_client, "Users who made purchase fewer than 3 times in the last 7 days"
    )
    await produce(
        kafka_bootstrap,
        [
            track(project, "opener", "app_open", 0),
            *(track(project, "buyer", "purchase", n) for n in range(3)),
        ],
    )
    await wait_for_count(project_client, active, 1)
    # The opener never purchased: lapsed and "fewer than 3" from the start; the buyer is neither.
    await wait_for_count(project_client, lapsed, 1)
    await wait_for_count(project_client, few, 1)
    assert await members(project_client, few) == {"opener"}

    clock_shift(timedelta(days=8))
    await wait_for_count(project_client, active, 0)  # 7 days passed: the opener left
    await wait_for_count(project_client, few, 2)  # the buyer's purchases aged out of 7 days
    assert await members(project_client, lapsed) == {"opener"}

    clock_shift(timedelta(days=31))
    await wait_for_count(project_client, lapsed, 2)  # no purchase in the last 30 days now
    assert await members(project_client, lapsed) == {"opener", "buyer"}


async def test_property_filtered_audience__created_later__counts_past_events(
    project_client: httpx.AsyncClient, kafka_bootstrap: str, stack: Stack
) -> None:
    project = project_client.project_id  # type: ignore[attr-defined]
    await produce(
        kafka_bootstrap,
        [
            track(project, "big", "purchase", 0, amount=150),
            track(project, "big", "purchase", 1, amount=300),
            track(project, "small", "purchase", 0, amount=150),
            track(project, "small", "purchase", 1, amount=20),
        ],
    )
    seen = await create(project_client, "Users who triggered event=purchase at least 2 times")
    await wait_for_count(project_client, seen, 2)  # both users' events are in
    big = await create(
        project_client, "Users who triggered event=purchase where amount > 100 at least 2 times"
    )
    assert await members(project_client, big) == {"big"}
    await produce(kafka_bootstrap, [track(project, "small", "purchase", 2, amount=500)])
    await wait_for_count(project_client, big, 2)
