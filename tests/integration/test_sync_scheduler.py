"""Two sync processes, one scheduled slot: the slot's sync runs exactly once."""

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from pymongo import AsyncMongoClient

from audience_shared.commands import next_refresh_at
from tests.fakes.klaviyo import FakeKlaviyo, running
from tests.integration.conftest import ServiceProcess, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.sync_integration]


@pytest.fixture(scope="module")
def klaviyo(stack: Stack) -> Iterator[FakeKlaviyo]:
    port = urlparse(stack.env["AUDIENCES_KLAVIYO_BASE_URL"]).port
    with running(FakeKlaviyo(), port=port) as fake:
        yield fake


async def test_schedule__two_sync_processes__run_the_daily_slot_once(
    project_client: httpx.AsyncClient,
    klaviyo: FakeKlaviyo,
    stack: Stack,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    connected = await project_client.post(
        "/v1/integrations/klaviyo", json={"api_key": "pk_test_fake_key_1234"}
    )
    assert connected.status_code == 201, connected.text
    list_id = klaviyo.add_list("Daily")
    klaviyo.add_profiles(list_id, [{"email": f"d{i}@example.com"} for i in range(30)])
    imported = await project_client.post(
        "/v1/audiences/import/klaviyo", json={"list_ids": [list_id]}
    )
    assert imported.status_code == 201, imported.text
    audience_id = imported.json()["items"][0]["id"]
    db = mongo_client[stack.database]

    # Both processes see a clock just past the next 09:00 UTC slot, so it is due for both.
    now = datetime.now(UTC)
    offset = (next_refresh_at("daily", now) - now).total_seconds() + 5  # type: ignore[operator]
    env = {
        **stack.env,
        "AUDIENCES_SCHEDULER_CLOCK_OFFSET_S": str(offset),
        "AUDIENCES_SCHEDULER_INTERVAL_S": "0.2",
    }
    processes = [ServiceProcess(f"sync-{n}", free_port(), env) for n in ("a", "b")]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 60
        scheduled: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            scheduled = await db.sync_runs.find(
                {"audience_id": audience_id, "trigger": "schedule"}
            ).to_list()
            if scheduled and scheduled[0]["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # more ticks of both processes: still one run
        scheduled = await db.sync_runs.find(
            {"audience_id": audience_id, "trigger": "schedule"}
        ).to_list()
        leases = await db.schedule_leases.find(
            {"_id": {"$regex": f"^{audience_id}\\|refresh\\|"}}
        ).to_list()
    finally:
        for process in processes:
            process.stop()

    assert len(scheduled) == 1, scheduled
    assert scheduled[0]["status"] == "completed"
    assert scheduled[0]["mode"] == "full"
    assert len(leases) == 1
    assert leases[0]["done"] is True
    status = (await project_client.get(f"/v1/audiences/{audience_id}/sync")).json()
    assert status["next_refresh_at"] is not None
