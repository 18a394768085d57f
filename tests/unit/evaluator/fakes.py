"""In-memory fakes of the evaluator's ports, for fast unit tests of the use cases."""

import copy
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from audience_evaluator.errors import LateCount
from audience_evaluator.outbox import outbox_writers
from audience_evaluator.ports import NO_PROVENANCE, Provenance
from audience_shared.events import MembershipChanged
from audience_shared.profile import encode_key
from audience_shared.rules import Group, compile_predicate

Document = dict[str, Any]


class FakeProfileStore:
    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.links: dict[str, Document] = {}
        # Tokens of the writes marked delivered ("profile|version": an older version's marker).
        self.markers: set[str] = set()
        self.fail_next_commit: Exception | None = None
        self.fail_next_links: Exception | None = None
        self.writes = 0

    async def load_profiles(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        return {pid: copy.deepcopy(self.docs[pid]) for pid in profile_ids if pid in self.docs}

    async def commit_profiles(self, writes: Sequence[tuple[Document, int]]) -> set[str]:
        if self.fail_next_commit is not None:
            exc, self.fail_next_commit = self.fail_next_commit, None
            raise exc
        conflicts = set()
        self.writes += 1
        for profile, expected in writes:
            current = self.docs.get(profile["_id"])
            if (current or {}).get("version", 0) != expected:
                conflicts.add(profile["_id"])
            else:
                profile["written_by"] = f"write-{self.writes}"
                self.docs[profile["_id"]] = copy.deepcopy(profile)
        return conflicts

    async def clear_outboxes(
        self, delivered: Sequence[tuple[str, int, datetime | None]]
    ) -> set[tuple[str, int]]:
        cleared = set()
        for pid, version, due_at in delivered:
            if self.docs[pid]["version"] == version:
                self.docs[pid]["outbox"] = []
                self.docs[pid]["due_at"] = due_at
                self.docs[pid]["version"] = version + 1
                self.docs[pid].pop("carried_from", None)
                cleared.add((pid, version))
        return cleared

    async def mark_delivered(self, writes: Collection[str]) -> None:
        self.markers |= set(writes)

    async def marked_writes(
        self, writes: Collection[tuple[str, int, str | None]]
    ) -> set[tuple[str, int]]:
        return {
            (pid, version)
            for pid, version, token in writes
            if token in self.markers or f"{pid}|{version}" in self.markers
        }

    async def outboxes_now(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        fields = ("_id", "version", "written_by", "carried_from", "outbox")
        return {
            pid: {name: copy.deepcopy(doc[name]) for name in fields if name in doc}
            for pid in profile_ids
            if (doc := self.docs.get(pid)) is not None
        }

    async def drop_unreferenced_markers(self, older_than: timedelta) -> int:
        # No times here: every marker no outbox names goes at once (the real store keeps them
        # `older_than` at least). Older versions' markers are not kept either.
        referenced = {
            token
            for doc in self.docs.values()
            if doc.get("outbox")
            for _version, token in outbox_writers(doc)
        }
        stale = self.markers - referenced
        self.markers -= stale
        return len(stale)

    async def profile_ids_to_sweep(self, now: datetime, limit: int) -> list[str]:
        return [
            pid for pid, doc in self.docs.items() if doc.get("due_at") and doc["due_at"] <= now
        ][:limit]

    async def matching_profile_ids(
        self,
        project_id: str,
        audience_id: str,
        rule: Group | None,
        now: datetime,
        chunk: int,
        counted_events: Sequence[str] = (),
    ) -> AsyncIterator[list[str]]:
        predicate = compile_predicate(rule) if rule is not None else None
        ids = [
            pid
            for pid, doc in self.docs.items()
            if doc["project_id"] == project_id
            and (
                (predicate.evaluate(doc, now).matched if predicate else False)
                or audience_id in doc.get("lists", [])
                or any(encode_key(name) in doc.get("events", {}) for name in counted_events)
            )
        ]
        for start in range(0, len(ids), chunk):
            yield ids[start : start + chunk]

    async def count_profiles(self, project_id: str) -> int:
        return sum(1 for doc in self.docs.values() if doc["project_id"] == project_id)

    async def save_identity_links(self, links: Sequence[Document]) -> None:
        if self.fail_next_links is not None:
            exc, self.fail_next_links = self.fail_next_links, None
            raise exc
        for link in links:
            self.links.setdefault(link["_id"], copy.deepcopy(link))


class FakeMembershipStore:
    """Counts and history; members are read from the profiles, as the real store does."""

    def __init__(self, profiles: FakeProfileStore) -> None:
        self._profiles = profiles
        self.counts: dict[str, int] = {}
        self.applied: set[tuple[str, str | None]] = set()
        self.history: list[tuple[str, datetime, int]] = []
        self.late_next = 0  # count_changes calls to refuse as past their deadline

    def members(self, audience_id: str) -> set[str]:
        return {
            pid
            for pid, doc in self._profiles.docs.items()
            if audience_id in doc.get("audiences", [])
        }

    async def count_changes(
        self,
        changes: Sequence[MembershipChanged],
        provenance: Provenance = NO_PROVENANCE,
        issue_by: float = float("inf"),
    ) -> None:
        # No deadline here: settle forgets at once, so only the marks keep a change from
        # counting twice (the tests that need timing drive it through the service's marks).
        if self.late_next:
            self.late_next -= 1
            raise LateCount(0.1)
        # As the real counters: a change was counted if its own token or its deciding write's
        # was recorded (a write's once all its changes were counted).
        recorded: set[tuple[str, str]] = set()
        counted: set[str] = set()
        for change in changes:
            event_id, audience_id = change.event_id, change.audience_id
            decided_by = provenance.decided.get(event_id) or provenance.carried.get(event_id)
            if event_id in counted or {(audience_id, event_id), (audience_id, decided_by)} & (
                self.applied
            ):
                continue
            counted.add(event_id)
            recorded.add((audience_id, provenance.decided.get(event_id) or event_id))
            delta = 1 if change.type == "membership.entered" else -1
            self.counts[audience_id] = self.counts.get(audience_id, 0) + delta
        self.applied |= recorded

    def settle(
        self, changes: Sequence[MembershipChanged], provenance: Provenance = NO_PROVENANCE
    ) -> None:
        # At once, the least a real counter may keep: a replay it would still catch goes uncaught.
        self.applied -= {
            (change.audience_id, provenance.decided.get(change.event_id) or change.event_id)
            for change in changes
        }

    async def member_profile_ids(self, audience_id: str) -> list[str]:
        return sorted(self.members(audience_id))

    async def member_count(self, audience_id: str) -> int:
        return self.counts.get(audience_id, 0)

    async def reconcile_counts(self, audience_ids: Sequence[str]) -> None:
        for audience_id in audience_ids:
            self.counts[audience_id] = len(self.members(audience_id))

    async def adopt_membership_documents(self) -> int:
        return 0

    async def record_history(self, audience_id: str, project_id: str, now: datetime) -> None:
        self.history.append((audience_id, now, self.counts.get(audience_id, 0)))


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[MembershipChanged] = []

    async def publish(self, changes: Sequence[MembershipChanged]) -> None:
        self.published.extend(changes)


class FakeCatalog:
    def __init__(self) -> None:
        self.audiences: dict[str, Document] = {}
        self.states: dict[str, Document] = {}

    async def active_audiences(self) -> list[Document]:
        return [a for a in self.audiences.values() if not a.get("archived")]

    async def audience(self, audience_id: str) -> Document | None:
        return self.audiences.get(audience_id)

    async def set_state(self, audience_id: str, fields: Document) -> None:
        self.states.setdefault(audience_id, {}).update(fields)

    async def state(self, audience_id: str) -> Document | None:
        return self.states.get(audience_id)

    async def claim_build(
        self,
        audience_id: str,
        version: int,
        owner: str,
        now: datetime,
        lease: timedelta,
        refresh_requested_at: datetime | None = None,
    ) -> bool:
        state = self.states.setdefault(audience_id, {})
        refresh_due = (
            refresh_requested_at is not None
            and state.get("build_version") == version
            and state.get("status") == "ready"
            and state.get("build_claimed_at", refresh_requested_at) < refresh_requested_at
        )
        if (
            state.get("build_version", 0) < version
            or state.get("build_owner") == owner
            or refresh_due
        ):
            state.update(
                build_version=version,
                build_owner=owner,
                build_lease_until=now + lease,
                build_claimed_at=now,
            )
            return True
        return False
