"""The sync service's ports: what its use cases need from sources, the store, files and Kafka."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from audience_shared.events import AudienceChanged, UserEventBase

Document = dict[str, Any]


@dataclass(frozen=True)
class SourceList:
    id: str
    name: str


@dataclass(frozen=True)
class SourceProfile:
    """A list member as the source describes it (Klaviyo's profile attributes)."""

    id: str
    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    joined_group_at: datetime | None = None


@dataclass(frozen=True)
class ProfilePage:
    profiles: list[SourceProfile]
    next_url: str | None


class ListSource(Protocol):
    def first_profiles_url(self, list_id: str, since: datetime | None) -> str: ...

    async def profiles_page(self, api_key: str, url: str) -> ProfilePage: ...


class UserEventPublisher(Protocol):
    async def publish(self, events: Sequence[UserEventBase]) -> None:
        """Return once every event is acknowledged by the broker (acks=all)."""
        ...


class CommandPublisher(Protocol):
    async def publish_command(self, command: Any) -> None: ...

    async def publish_audience_changed(self, event: AudienceChanged) -> None: ...


class JobHandle(Protocol):
    """A claimed work record: checkpointing renews the claim; losing it stops the work."""

    kind: str
    record: Document

    async def checkpoint(self, checkpoint: Document, progress: Document) -> None: ...

    async def update(self, fields: Document) -> None: ...


class IdentityStore(Protocol):
    """Identity keys ("email:a@b.c") linked to users, each link a document keyed by the key, so
    every lookup on the sync's hot path pins `_id` (the only lookup FerretDB serves by index).
    The sync links the users it maps or creates; the evaluator links users whose identify sets
    external_id, email or phone."""

    async def find_links(self, project_id: str, keys: Sequence[str]) -> dict[str, str]:
        """user ids by identity key, for the keys already linked."""
        ...

    async def save_links(self, project_id: str, links: dict[str, str]) -> None:
        """Link keys to users; a key linked before keeps its first user."""
        ...

    async def existing_users(self, project_id: str, user_ids: Sequence[str]) -> set[str]:
        """Which of these user ids have a profile."""
        ...


class SyncStore(Protocol):
    async def audience(self, audience_id: str) -> Document | None: ...

    async def klaviyo_key(self, project_id: str) -> bytes | None:
        """The encrypted Klaviyo API key of the project, if connected."""
        ...

    async def sync_state(self, audience_id: str) -> Document | None: ...

    async def list_members(
        self, audience_id: str, user_ids: Sequence[str]
    ) -> dict[str, Document]: ...

    async def mark_seen(
        self, audience_id: str, project_id: str, run_id: str, seen: Sequence[Document]
    ) -> None: ...

    async def unseen_members(self, audience_id: str, run_id: str, limit: int) -> list[str]: ...

    async def mark_left(self, audience_id: str, user_ids: Sequence[str], run_id: str) -> None: ...

    async def finish_sync(
        self, audience_id: str, run_id: str, succeeded: bool, fields: Document
    ) -> None:
        """Record the outcome on the audience's sync state (watermark, last full run)."""
        ...

    async def release_sync_lock(self, audience_id: str, run_id: str) -> None: ...


class MemberSource(Protocol):
    async def count_members(self, audience_id: str) -> int: ...

    def member_pages(
        self, audience_id: str, after: str | None, size: int
    ) -> AsyncIterator[list[Document]]:
        """Members after `after` in user_id order, in pages, each with `user_id`, `joined_at`
        and the profile's traits: one query per unload attempt, not one per page."""
        ...


class CsvSource(Protocol):
    def path(self, name: str) -> Path: ...

    async def header(self, path: Path) -> list[str] | None: ...

    async def count_rows(self, path: Path) -> int: ...

    def chunks(
        self, path: Path, skip: int, size: int
    ) -> AsyncIterator[list[tuple[int, list[str]]]]: ...


class ExportSink(Protocol):
    """Appends rows to an unload file; resumable at a byte offset it reported before."""

    async def open(self, name: str, resume_at: int | None) -> None: ...

    async def write(self, lines: Sequence[str]) -> int:
        """Append and flush; return the file size afterwards."""
        ...

    async def complete(self) -> int: ...


class ScheduleStore(Protocol):
    async def scheduled_audiences(self) -> list[Document]: ...

    async def set_next_refresh(self, audience_id: str, at: datetime | None) -> None: ...

    async def audience_ready(self, audience_id: str, rule_version: int) -> bool:
        """Whether the evaluator finished building this version of the audience's members."""
        ...

    async def claim_slot(self, slot_id: str, owner: str, now: datetime, ttl_s: float) -> bool: ...

    async def complete_slot(self, slot_id: str, outcome: str) -> None: ...

    async def create_sync_run(self, run: Document, now: datetime) -> str | None:
        """Insert the run and take the audience's sync lock; the id of a run holding it if busy."""
        ...

    async def create_export(self, export: Document) -> bool: ...


class JobStore(Protocol):
    async def claim_next(
        self, kind: str, owner: str, now: datetime, lease_s: float
    ) -> Document | None: ...

    async def get(self, kind: str, record_id: str) -> Document | None: ...

    async def update_owned(
        self, kind: str, record_id: str, owner: str, fields: Document, inc: Document | None = None
    ) -> None:
        """Update a record this worker holds; raise if another worker took it over."""
        ...

    async def fail_unclaimed(self, kind: str, record_id: str, fields: Document) -> None: ...
