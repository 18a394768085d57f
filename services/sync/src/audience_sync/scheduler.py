"""The scheduler: runs each due refresh slot exactly once, whichever sync process sees it first.

A slot (audience, action, time) is claimed by inserting its lease document: the store's unique
`_id` picks one winner among any number of processes. The work it starts has an id derived from
the slot, so a winner that dies halfway and is replaced (stale lease) still creates it once.
"""

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from audience_shared.commands import (
    ExportRequested,
    SyncRequested,
    effective_schedule,
    last_slot,
    new_sync_run,
    next_refresh_at,
)
from audience_shared.events import AudienceChanged
from audience_sync.metrics import SCHEDULED_SLOTS
from audience_sync.ports import CommandPublisher, Document, ScheduleStore

log = structlog.get_logger()


def slot_hash(slot_id: str) -> str:
    return hashlib.sha256(slot_id.encode()).hexdigest()[:20]


class Scheduler:
    def __init__(
        self,
        store: ScheduleStore,
        commands: CommandPublisher,
        owner: str,
        incremental_interval_s: float,
        lease_ttl_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._commands = commands
        self._owner = owner
        self._incremental_s = incremental_interval_s
        self._lease_ttl_s = lease_ttl_s
        self._clock = clock
        # What this process last wrote, so an unchanged next_refresh_at costs no write per tick.
        self._next_refresh: dict[str, datetime | None] = {}
        # Slots this process finished; later ticks skip them without asking the store.
        self._done: set[str] = set()

    async def tick(self) -> int:
        """Start every slot that is due and not yet taken; return how many this process ran."""
        now = self._clock()
        ran = 0
        for audience in await self._store.scheduled_audiences():
            schedule = effective_schedule(
                audience.get("kind", "dynamic"), audience.get("refresh_schedule")
            )
            await self._note_next_refresh(audience["_id"], next_refresh_at(schedule, now))
            created = audience.get("created_at") or now
            if audience.get("mode") == "unload":
                ran += await self._first_unload(audience, now)
            slot = last_slot(schedule, now)
            # Only slots after the audience existed: a new daily audience first runs at 09:00.
            if slot is not None and slot > created:
                ran += await self._run_slot(audience, "refresh", slot, now)
            if (
                audience.get("kind") == "synced"
                and schedule != "manual"
                and self._incremental_s > 0
            ):
                stamp = now.timestamp() // self._incremental_s * self._incremental_s
                incremental = datetime.fromtimestamp(stamp, UTC)
                if incremental > created and incremental != slot:
                    ran += await self._run_slot(audience, "incremental", incremental, now)
        return ran

    async def _note_next_refresh(self, audience_id: str, at: datetime | None) -> None:
        if audience_id in self._next_refresh and self._next_refresh[audience_id] == at:
            return
        await self._store.set_next_refresh(audience_id, at)
        self._next_refresh[audience_id] = at

    async def _first_unload(self, audience: Document, now: datetime) -> int:
        """A `mode: unload` audience writes its file once its members are built (seed 001), and
        again after each rule change is built; its schedule then refreshes the file."""
        version = int(audience.get("rule_version", 1))
        slot_id = f"{audience['_id']}|unload|v{version}"
        if slot_id in self._done or not await self._store.audience_ready(audience["_id"], version):
            return 0
        return await self._claim_and_start(audience, "unload", slot_id, now)

    async def _run_slot(
        self, audience: Document, action: str, slot: datetime, now: datetime
    ) -> int:
        slot_id = f"{audience['_id']}|{action}|{slot.isoformat()}"
        if slot_id in self._done:
            return 0
        return await self._claim_and_start(audience, action, slot_id, now)

    async def _claim_and_start(
        self, audience: Document, action: str, slot_id: str, now: datetime
    ) -> int:
        if not await self._store.claim_slot(slot_id, self._owner, now, self._lease_ttl_s):
            return 0
        outcome = await self._start(audience, action, slot_id, now)
        if outcome == "busy":
            # Keep the lease: this process retries the slot on its next tick.
            log.info("schedule.slot_deferred", slot=slot_id)
            return 0
        await self._store.complete_slot(slot_id, outcome)
        self._done.add(slot_id)
        SCHEDULED_SLOTS.labels(action=outcome).inc()
        log.info("schedule.slot_ran", slot=slot_id, outcome=outcome)
        return 1

    async def _start(self, audience: Document, action: str, slot_id: str, now: datetime) -> str:
        project_id, audience_id = audience["project_id"], audience["_id"]
        key = slot_hash(slot_id)
        if action == "unload":
            return await self._start_unload(audience, key, "create", now)
        if audience.get("kind") == "synced":
            mode = "incremental" if action == "incremental" else "full"
            run_id = f"run_{key}"
            run = new_sync_run(run_id, audience, mode, "schedule", now)
            if await self._store.create_sync_run(run, now) is not None:
                return "busy"
            await self._commands.publish_command(
                SyncRequested(
                    event_id=f"cmd_{key}",
                    project_id=project_id,
                    audience_id=audience_id,
                    run_id=run_id,
                    mode=mode,
                    trigger="schedule",
                )
            )
            return f"sync_{mode}"
        if audience.get("mode") == "unload":
            return await self._start_unload(audience, key, "schedule", now)
        await self._commands.publish_audience_changed(
            AudienceChanged(
                event_id=f"evt_{key}",
                project_id=project_id,
                audience_id=audience_id,
                change="refresh_requested",
                version=audience.get("rule_version", 1),
            )
        )
        return "refresh"

    async def _start_unload(self, audience: Document, key: str, trigger: str, now: datetime) -> str:
        """An export of the audience's stored projection (`columns`) and format."""
        project_id, audience_id = audience["project_id"], audience["_id"]
        export_id = f"exp_{key}"
        fmt = audience.get("unload_format") or "csv"
        columns = audience.get("columns")
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        await self._store.create_export(
            {
                "_id": export_id,
                "kind": "export",
                "project_id": project_id,
                "audience_id": audience_id,
                "format": fmt,
                "columns": columns or None,
                "include_traits": False,
                "file": f"{export_id}.{fmt}",
                "trigger": trigger,
                "status": "queued",
                "attempts": 0,
                "rows_total": None,
                "rows_written": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        await self._commands.publish_command(
            ExportRequested(
                event_id=f"cmd_{key}",
                project_id=project_id,
                audience_id=audience_id,
                export_id=export_id,
            )
        )
        return "unload"
