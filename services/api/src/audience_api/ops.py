"""Use cases behind the ops dashboard: pipeline health from the broker and the services' probes,
and a project's recent sync, import and export runs. No web or driver imports."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from audience_api.errors import NotFound
from audience_api.services import Principal, utcnow

Document = dict[str, Any]
RunKind = Literal["sync", "import", "export"]
RUN_KINDS: tuple[RunKind, ...] = ("sync", "import", "export")


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end_offset: int
    committed: int

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - self.committed)


@dataclass(frozen=True)
class BrokerSnapshot:
    """Offsets read from the broker at one moment; the dashboard turns two of them into rates."""

    lag: list[PartitionLag]
    events_produced: int
    membership_changes: int
    dead_letters: int


# The ports live here rather than in ports.py: only the dashboard's use cases need them.
class BrokerOffsets(Protocol):
    async def snapshot(self, consumer_group: str) -> BrokerSnapshot: ...


class HealthProbe(Protocol):
    async def readiness(self, base_url: str) -> Document:
        """`{"status": "ready" | "not_ready" | "unreachable", "checks": {...}, "error": ...}`"""
        ...


class RunRecords(Protocol):
    async def recent(self, kind: RunKind, project_id: str, limit: int) -> list[Document]: ...

    async def project_organization(self, project_id: str) -> str | None: ...


class ReadinessCheck(Protocol):
    async def __call__(self) -> dict[str, bool]: ...


class PipelineService:
    """What the pipeline looks like now. Counters are broker offsets, so they survive restarts
    and two snapshots a few seconds apart give honest rates."""

    def __init__(
        self,
        offsets: BrokerOffsets,
        probe: HealthProbe,
        own_readiness: ReadinessCheck,
        consumer_group: str,
        service_urls: dict[str, str | None],
    ) -> None:
        self._offsets = offsets
        self._probe = probe
        self._own_readiness = own_readiness
        self._consumer_group = consumer_group
        self._service_urls = service_urls

    async def pipeline(self, principal: Principal) -> Document:
        del principal  # any valid key may look; nothing here belongs to one project
        services = [await self._api_health()]
        for name, url in self._service_urls.items():
            if url is None:
                services.append({"name": name, "url": None, "status": "not_configured"})
            else:
                services.append({"name": name, "url": url, **await self._probe.readiness(url)})
        broker: Document = {"available": True, "error": None}
        snapshot: BrokerSnapshot | None = None
        try:
            snapshot = await self._offsets.snapshot(self._consumer_group)
        except BrokerUnavailable as exc:
            broker = {"available": False, "error": str(exc)}
        return {
            "as_of": utcnow(),
            "consumer_group": self._consumer_group,
            "broker": broker,
            "services": services,
            "consumer_lag": None
            if snapshot is None
            else [
                {
                    "partition": p.partition,
                    "end_offset": p.end_offset,
                    "committed": p.committed,
                    "lag": p.lag,
                }
                for p in snapshot.lag
            ],
            "totals": None
            if snapshot is None
            else {
                "events_produced": snapshot.events_produced,
                "events_processed": sum(p.committed for p in snapshot.lag),
                "membership_changes": snapshot.membership_changes,
                "dead_letters": snapshot.dead_letters,
            },
        }

    async def _api_health(self) -> Document:
        checks = await self._own_readiness()
        status = "ready" if all(checks.values()) else "not_ready"
        return {"name": "api", "url": None, "status": status, "checks": checks}


class BrokerUnavailable(Exception):
    """The broker did not answer the offset queries in time."""


class RunHistoryService:
    """A project's recent sync runs, CSV imports and unloads, newest first."""

    def __init__(self, records: RunRecords) -> None:
        self._records = records

    async def recent(
        self, principal: Principal, project: str | None, kinds: Sequence[RunKind], limit: int
    ) -> list[Document]:
        project_id = principal.project_for(project)
        if principal.project_id is None and (
            await self._records.project_organization(project_id) != principal.organization_id
        ):
            raise NotFound("project", project_id)
        runs: list[Document] = []
        for kind in kinds:
            runs.extend(
                _run(kind, doc) for doc in await self._records.recent(kind, project_id, limit)
            )
        runs.sort(key=lambda run: run["created_at"], reverse=True)
        return runs[:limit]


def _run(kind: RunKind, doc: Document) -> Document:
    """One record of any kind in one shape; kind-specific counters sit under `rows`."""
    status = doc.get("status", "queued")
    rows: Document
    if kind == "sync":
        total = None
        done = doc.get("profiles", 0)
        rows = {key: doc.get(key, 0) for key in ("pages", "profiles", "entered", "exited")}
    elif kind == "import":
        total = doc.get("rows_total")
        done = doc.get("rows_imported", 0) + doc.get("rows_failed", 0)
        rows = {"total": total, "imported": doc.get("rows_imported", 0)}
        rows["failed"] = doc.get("rows_failed", 0)
    else:
        total = doc.get("rows_total")
        done = doc.get("rows_written", 0)
        rows = {"total": total, "written": done}
    finished: datetime | None = doc.get("finished_at")
    return {
        "kind": kind,
        "id": doc["_id"],
        "audience_id": doc.get("audience_id"),
        "status": status,
        "trigger": doc.get("trigger"),
        "mode": doc.get("mode") if kind == "sync" else doc.get("format"),
        "progress": 1.0 if status == "completed" else (min(1.0, done / total) if total else None),
        "rows": rows,
        "errors": (doc.get("errors") or [])[:20],
        "error": doc.get("error"),
        "created_at": doc["created_at"],
        "finished_at": finished,
    }
