"""In-memory fakes of the sync service's ports, for fast use-case tests."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from audience_shared.events import AudienceChanged, UserEventBase
from audience_shared.identity import trait_identity_keys
from audience_sync.ports import Document, ProfilePage, SourceProfile


class FakeEvents:
    def __init__(self) -> None:
        self.published: list[UserEventBase] = []

    async def publish(self, events: Sequence[UserEventBase]) -> None:
        self.published.extend(events)


class FakeIdentities:
    """Links as the store holds them: the sync's own and those the evaluator wrote for
    identified users (`linked(...)` builds those from profiles, as the evaluator would)."""

    def __init__(self, links: dict[str, str] | None = None, users: set[str] | None = None) -> None:
        self.links: dict[str, str] = dict(links or {})
        self.users = set(users or ())

    async def find_links(self, project_id: str, keys: Sequence[str]) -> dict[str, str]:
        return {k: self.links[k] for k in keys if k in self.links}

    async def save_links(self, project_id: str, links: dict[str, str]) -> None:
        for key, user in links.items():
            self.links.setdefault(key, user)

    async def existing_users(self, project_id: str, user_ids: Sequence[str]) -> set[str]:
        return self.users & set(user_ids)


def linked(profiles: list[Document]) -> FakeIdentities:
    """Identities of users the evaluator has folded: their traits' keys are linked to them."""
    identities = FakeIdentities(users={doc["user_id"] for doc in profiles})
    for doc in profiles:
        for key in trait_identity_keys(doc["traits"]):
            identities.links.setdefault(key, doc["user_id"])
    return identities


class FakeSource:
    """A list as pages; `fail_at` raises on that page index once per entry."""

    def __init__(self, profiles: list[SourceProfile], page_size: int = 2) -> None:
        self.profiles = profiles
        self.page_size = page_size
        self.fetched: list[int] = []
        self.fail_at: list[int] = []

    def first_profiles_url(self, list_id: str, since: datetime | None) -> str:
        return "page:0"

    async def profiles_page(self, api_key: str, url: str) -> ProfilePage:
        index = int(url.split(":")[1])
        if index in self.fail_at:
            self.fail_at.remove(index)
            raise ConnectionError("boom")
        self.fetched.append(index)
        start = index * self.page_size
        chunk = self.profiles[start : start + self.page_size]
        more = start + self.page_size < len(self.profiles)
        return ProfilePage(chunk, f"page:{index + 1}" if more else None)


@dataclass
class FakeSyncStore:
    audiences: dict[str, Document] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    states: dict[str, Document] = field(default_factory=dict)
    members: dict[str, Document] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)

    async def audience(self, audience_id: str) -> Document | None:
        return self.audiences.get(audience_id)

    async def klaviyo_key(self, project_id: str) -> bytes | None:
        return self.keys.get(project_id)

    async def sync_state(self, audience_id: str) -> Document | None:
        return self.states.get(audience_id)

    async def list_members(self, audience_id: str, user_ids: Sequence[str]) -> dict[str, Document]:
        return {
            u: self.members[f"{audience_id}|{u}"]
            for u in user_ids
            if f"{audience_id}|{u}" in self.members
        }

    async def mark_seen(
        self, audience_id: str, project_id: str, run_id: str, seen: Sequence[Document]
    ) -> None:
        for item in seen:
            self.members[f"{audience_id}|{item['user_id']}"] = {
                **item,
                "audience_id": audience_id,
                "member": True,
                "last_seen_run": run_id,
            }

    async def unseen_members(self, audience_id: str, run_id: str, limit: int) -> list[str]:
        return [
            m["user_id"]
            for m in self.members.values()
            if m["audience_id"] == audience_id and m["member"] and m["last_seen_run"] != run_id
        ][:limit]

    async def mark_left(self, audience_id: str, user_ids: Sequence[str], run_id: str) -> None:
        for user in user_ids:
            self.members[f"{audience_id}|{user}"]["member"] = False

    async def finish_sync(
        self, audience_id: str, run_id: str, succeeded: bool, fields: Document
    ) -> None:
        self.states.setdefault(audience_id, {}).update(fields, last_ok=succeeded)

    async def release_sync_lock(self, audience_id: str, run_id: str) -> None:
        self.released.append(run_id)


class FakeJob:
    def __init__(self, kind: str, record: Document) -> None:
        self.kind = kind
        self.record = record
        self.checkpoints: list[Document] = []

    async def checkpoint(self, checkpoint: Document, progress: Document) -> None:
        self.checkpoints.append(dict(checkpoint))
        self.record.update({"checkpoint": dict(checkpoint), **progress})

    async def update(self, fields: Document) -> None:
        self.record.update(fields)


class FakeCsv:
    def __init__(self, text: str) -> None:
        import csv
        import io

        self.rows = list(csv.reader(io.StringIO(text)))

    def path(self, name: str) -> Path:
        return Path("/")  # exists

    async def header(self, path: Path) -> list[str] | None:
        return self.rows[0] if self.rows else None

    async def count_rows(self, path: Path) -> int:
        return sum(1 for r in self.rows[1:] if r)

    async def chunks(
        self, path: Path, skip: int, size: int
    ) -> AsyncIterator[list[tuple[int, list[str]]]]:
        numbered = [(n, r) for n, r in enumerate(self.rows[1:], start=2) if r][skip:]
        for start in range(0, len(numbered), size):
            yield numbered[start : start + size]


class FakeMembers:
    def __init__(self, members: list[Document]) -> None:
        self.members = sorted(members, key=lambda m: m["user_id"])

    async def count_members(self, audience_id: str) -> int:
        return len(self.members)

    async def member_pages(
        self, audience_id: str, after: str | None, size: int
    ) -> AsyncIterator[list[Document]]:
        rest = [m for m in self.members if after is None or m["user_id"] > after]
        for start in range(0, len(rest), size):
            yield rest[start : start + size]


class MemorySink:
    def __init__(self) -> None:
        self.data = b""
        self.completed = False

    async def open(self, name: str, resume_at: int | None) -> None:
        self.data = self.data[: resume_at or 0]

    async def write(self, lines: Sequence[str]) -> int:
        self.data += "".join(lines).encode()
        return len(self.data)

    async def complete(self) -> int:
        self.completed = True
        return len(self.data)


@dataclass
class FakeScheduleStore:
    audiences: list[Document] = field(default_factory=list)
    leases: dict[str, Document] = field(default_factory=dict)
    runs: dict[str, Document] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    exports: dict[str, Document] = field(default_factory=dict)
    next_refresh: dict[str, datetime | None] = field(default_factory=dict)

    async def scheduled_audiences(self) -> list[Document]:
        return list(self.audiences)

    ready: set[str] = field(default_factory=set)

    async def set_next_refresh(self, audience_id: str, at: datetime | None) -> None:
        self.next_refresh[audience_id] = at

    async def audience_ready(self, audience_id: str, rule_version: int) -> bool:
        return f"{audience_id}|v{rule_version}" in self.ready

    async def claim_slot(self, slot_id: str, owner: str, now: datetime, ttl_s: float) -> bool:
        lease = self.leases.get(slot_id)
        if lease is None:
            self.leases[slot_id] = {"owner": owner, "done": False, "claimed_at": now}
            return True
        return not lease["done"] and lease["owner"] == owner

    async def complete_slot(self, slot_id: str, outcome: str) -> None:
        self.leases[slot_id].update(done=True, outcome=outcome)

    async def create_sync_run(self, run: Document, now: datetime) -> str | None:
        holder = self.locks.get(run["audience_id"])
        if holder is not None and holder != run["_id"]:
            return holder
        self.locks[run["audience_id"]] = run["_id"]
        self.runs.setdefault(run["_id"], run)
        return None

    async def create_export(self, export: Document) -> bool:
        return self.exports.setdefault(export["_id"], export) is export


class FakeCommands:
    def __init__(self) -> None:
        self.commands: list[Any] = []
        self.changes: list[AudienceChanged] = []

    async def publish_command(self, command: Any) -> None:
        self.commands.append(command)

    async def publish_audience_changed(self, event: AudienceChanged) -> None:
        self.changes.append(event)
