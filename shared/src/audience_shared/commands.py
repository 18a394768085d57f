"""Commands to the sync service on `sync.requests.v1`, and the refresh schedules it runs."""

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from audience_shared.events import Contract, new_event_id, utcnow

Schedule = Literal["realtime", "daily", "weekly", "manual"]

# Seed 001: intent data is produced fresh every day; dataset (Elixir) data changes weekly.
DEFAULT_SCHEDULE_BY_TYPE: dict[str, Schedule] = {"intents": "daily", "dataset": "weekly"}

DAILY_AT = time(9, 0, tzinfo=UTC)
# Saturday 18:00 UTC, so the weekly batch never competes with the daily 09:00 refreshes.
WEEKLY_WEEKDAY = 5
WEEKLY_AT = time(18, 0, tzinfo=UTC)


def default_schedule(audience_type: str) -> Schedule:
    """The refresh schedule an audience gets when its creator names none."""
    return DEFAULT_SCHEDULE_BY_TYPE.get(audience_type, "realtime")


def effective_schedule(kind: str, schedule: str | None) -> Schedule:
    """Synced lists must reconcile at least daily: Klaviyo never reports removals."""
    if kind == "synced" and schedule in (None, "realtime"):
        return "daily"
    if schedule in ("daily", "weekly", "manual"):
        return schedule  # type: ignore[return-value]
    return "realtime"


def last_slot(schedule: str, now: datetime) -> datetime | None:
    """The latest scheduled run time at or before `now` (None for realtime and manual)."""
    now = now.astimezone(UTC)
    if schedule == "daily":
        slot = datetime.combine(now.date(), DAILY_AT)
        return slot if slot <= now else slot - timedelta(days=1)
    if schedule == "weekly":
        back = (now.weekday() - WEEKLY_WEEKDAY) % 7
        slot = datetime.combine(now.date() - timedelta(days=back), WEEKLY_AT)
        return slot if slot <= now else slot - timedelta(days=7)
    return None


def next_refresh_at(schedule: str, now: datetime) -> datetime | None:
    """The next scheduled run time strictly after `now` (None for realtime and manual)."""
    slot = last_slot(schedule, now)
    if slot is None:
        return None
    return slot + (timedelta(days=1) if schedule == "daily" else timedelta(days=7))


class Command(Contract):
    """Base of the sync commands: keyed by audience so one audience's commands stay ordered."""

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=200)
    project_id: str = Field(min_length=1, max_length=100)
    audience_id: str = Field(min_length=1, max_length=100)
    requested_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return self.audience_id.encode()


class SyncRequested(Command):
    """Pull a synced list from its source; the run record `run_id` already exists in the store."""

    type: Literal["sync.requested"] = "sync.requested"
    run_id: str = Field(min_length=1, max_length=100)
    mode: Literal["full", "incremental"] = "full"
    trigger: Literal["api", "import", "schedule"] = "api"


class ImportRequested(Command):
    """Import an uploaded CSV file into a static list; the import record already exists."""

    type: Literal["import.requested"] = "import.requested"
    import_id: str = Field(min_length=1, max_length=100)


class ExportRequested(Command):
    """Unload an audience's members to a file; the export record already exists."""

    type: Literal["export.requested"] = "export.requested"
    export_id: str = Field(min_length=1, max_length=100)


class DatasetImportRequested(Contract):
    """Import an uploaded CSV into a dataset; the dataset import record already exists.

    Not an audience command: keyed by project and dataset, so one dataset's imports stay ordered.
    """

    type: Literal["dataset_import.requested"] = "dataset_import.requested"
    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=200)
    project_id: str = Field(min_length=1, max_length=100)
    dataset: str = Field(min_length=1, max_length=100)
    import_id: str = Field(min_length=1, max_length=100)
    requested_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return f"{self.project_id}|{self.dataset}".encode()


AnySyncCommand = SyncRequested | ImportRequested | ExportRequested | DatasetImportRequested
SyncCommand = Annotated[AnySyncCommand, Field(discriminator="type")]
sync_command_adapter: TypeAdapter[AnySyncCommand] = TypeAdapter(SyncCommand)


def new_sync_run(
    run_id: str, audience: dict[str, Any], mode: str, trigger: str, now: datetime
) -> dict[str, Any]:
    """A sync run record as the api and the scheduler both create it."""
    return {
        "_id": run_id,
        "kind": "sync",
        "project_id": audience["project_id"],
        "audience_id": audience["_id"],
        "list_id": (audience.get("sync_source") or {}).get("list_id"),
        "mode": mode,
        "trigger": trigger,
        "status": "queued",
        "attempts": 0,
        "pages": 0,
        "profiles": 0,
        "entered": 0,
        "exited": 0,
        "identified": 0,
        "created_at": now,
        "updated_at": now,
    }
