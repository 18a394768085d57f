"""The dashboard's use cases with fakes: pipeline health and offsets, recent runs in one shape."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audience_api.errors import NotFound
from audience_api.ops import (
    BrokerSnapshot,
    BrokerUnavailable,
    PartitionLag,
    PipelineService,
    RunHistoryService,
    RunKind,
)
from audience_api.services import Principal

ORG_KEY = Principal("key_1", "org_1", None, "admin")
PROJECT_KEY = Principal("key_2", "org_1", "prj_1", "read")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


class FakeOffsets:
    def __init__(self, snapshot: BrokerSnapshot | None) -> None:
        self.snapshot_value = snapshot
        self.groups: list[str] = []

    async def snapshot(self, consumer_group: str) -> BrokerSnapshot:
        self.groups.append(consumer_group)
        if self.snapshot_value is None:
            raise BrokerUnavailable("broker offsets unavailable: timed out")
        return self.snapshot_value


class FakeProbe:
    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers

    async def readiness(self, base_url: str) -> dict[str, Any]:
        return self.answers[base_url]


async def api_ready() -> dict[str, bool]:
    return {"store": True, "broker": False}


def pipeline(offsets: FakeOffsets, urls: dict[str, str | None]) -> PipelineService:
    probe = FakeProbe(
        {
            "http://evaluator": {"status": "ready", "checks": {"store": True}, "error": None},
            "http://sync": {"status": "unreachable", "checks": {}, "error": "ConnectError()"},
        }
    )
    return PipelineService(offsets, probe, api_ready, "evaluator-group", urls)


async def test_pipeline__offsets__lag_per_partition_and_totals() -> None:
    snapshot = BrokerSnapshot(
        lag=[PartitionLag(0, 10, 7), PartitionLag(1, 5, 5), PartitionLag(2, 3, 0)],
        events_produced=18,
        membership_changes=4,
        dead_letters=2,
    )
    offsets = FakeOffsets(snapshot)

    body = await pipeline(offsets, {"evaluator": "http://evaluator", "sync": None}).pipeline(
        ORG_KEY
    )

    assert offsets.groups == ["evaluator-group"]
    assert [(p["partition"], p["lag"]) for p in body["consumer_lag"]] == [(0, 3), (1, 0), (2, 3)]
    assert body["totals"] == {
        "events_produced": 18,
        "events_processed": 12,
        "membership_changes": 4,
        "dead_letters": 2,
    }
    assert body["broker"] == {"available": True, "error": None}
    services = {s["name"]: s for s in body["services"]}
    assert services["api"]["status"] == "not_ready"  # one failing check is enough
    assert services["evaluator"]["status"] == "ready"
    assert services["sync"] == {"name": "sync", "url": None, "status": "not_configured"}


async def test_pipeline__broker_unavailable__no_numbers_but_health_still_reported() -> None:
    body = await pipeline(FakeOffsets(None), {"evaluator": None, "sync": "http://sync"}).pipeline(
        PROJECT_KEY
    )

    assert body["broker"]["available"] is False
    assert "timed out" in body["broker"]["error"]
    assert body["consumer_lag"] is None
    assert body["totals"] is None
    assert {s["name"]: s["status"] for s in body["services"]} == {
        "api": "not_ready",
        "evaluator": "not_configured",
        "sync": "unreachable",
    }


def test_partition_lag__committed_past_end__never_negative() -> None:
    # The end offset is read after the committed one, but a retention race can still invert them.
    assert PartitionLag(0, end_offset=4, committed=6).lag == 0


class FakeRuns:
    def __init__(self, records: dict[RunKind, list[dict[str, Any]]]) -> None:
        self.records = records
        self.asked: list[tuple[RunKind, str, int]] = []

    async def recent(self, kind: RunKind, project_id: str, limit: int) -> list[dict[str, Any]]:
        self.asked.append((kind, project_id, limit))
        return [r for r in self.records.get(kind, []) if r["project_id"] == project_id][:limit]

    async def project_organization(self, project_id: str) -> str | None:
        return {"prj_1": "org_1", "prj_2": "org_2"}.get(project_id)


RECORDS: dict[RunKind, list[dict[str, Any]]] = {
    "sync": [
        {
            "_id": "run_1",
            "project_id": "prj_1",
            "audience_id": "aud_1",
            "status": "running",
            "mode": "full",
            "trigger": "api",
            "pages": 3,
            "profiles": 250,
            "entered": 200,
            "exited": 1,
            "created_at": T0 + timedelta(minutes=3),
        }
    ],
    "import": [
        {
            "_id": "imp_1",
            "project_id": "prj_1",
            "audience_id": "aud_2",
            "status": "running",
            "rows_total": 10,
            "rows_imported": 4,
            "rows_failed": 1,
            "errors": [{"row": 3, "message": "invalid email"}],
            "created_at": T0 + timedelta(minutes=1),
        }
    ],
    "export": [
        {
            "_id": "exp_1",
            "project_id": "prj_1",
            "audience_id": "aud_1",
            "status": "completed",
            "format": "csv",
            "rows_total": 0,
            "rows_written": 0,
            "created_at": T0 + timedelta(minutes=2),
            "finished_at": T0 + timedelta(minutes=2, seconds=1),
        }
    ],
}


async def test_runs__every_kind__newest_first_in_one_shape() -> None:
    runs = await RunHistoryService(FakeRuns(RECORDS)).recent(
        PROJECT_KEY, None, ["sync", "import", "export"], 10
    )

    assert [(r["kind"], r["id"]) for r in runs] == [
        ("sync", "run_1"),
        ("export", "exp_1"),
        ("import", "imp_1"),
    ]
    sync, export, imported = runs
    assert sync["progress"] is None  # a Klaviyo list's size is unknown until the last page
    assert sync["rows"] == {"pages": 3, "profiles": 250, "entered": 200, "exited": 1}
    assert imported["progress"] == 0.5
    assert imported["rows"] == {"total": 10, "imported": 4, "failed": 1}
    assert imported["errors"] == [{"row": 3, "message": "invalid email"}]
    assert export["progress"] == 1.0  # completed, even with nothing to write
    assert export["mode"] == "csv"


async def test_runs__limit_and_kind_filter() -> None:
    runs = FakeRuns(RECORDS)
    found = await RunHistoryService(runs).recent(ORG_KEY, "prj_1", ["import"], 1)
    assert [r["id"] for r in found] == ["imp_1"]
    assert runs.asked == [("import", "prj_1", 1)]


async def test_runs__organization_key__project_of_another_organization__not_found() -> None:
    with pytest.raises(NotFound):
        await RunHistoryService(FakeRuns(RECORDS)).recent(ORG_KEY, "prj_2", ["sync"], 10)
    with pytest.raises(NotFound):
        await RunHistoryService(FakeRuns(RECORDS)).recent(ORG_KEY, "prj_unknown", ["sync"], 10)
