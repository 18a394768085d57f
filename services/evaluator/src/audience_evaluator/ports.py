"""The evaluator's ports: what the membership use cases need from the store and the broker."""

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from audience_shared.events import MembershipChanged
from audience_shared.rules import Group

Document = dict[str, Any]


@dataclass(frozen=True)
class Provenance:
    """Which profile write decided each change a delivery counts (by the token the write left in
    the profile's `written_by`). A counter records a write's token once for all the changes that
    write decided, as they are counted together; a change carried over from an earlier write
    (the process delivering it may have died before marking it, or after counting it) is
    recorded by a token of its own. A change in neither is taken as carried, writer unknown."""

    decided: Mapping[str, str] = field(default_factory=dict)  # event id → this delivery's write
    carried: Mapping[str, str | None] = field(default_factory=dict)  # event id → earlier write


# Every change taken as carried over, writer unknown: each is recorded by its own token.
NO_PROVENANCE = Provenance()


class ProfileStore(Protocol):
    async def load_profiles(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        """The stored profiles of these ids; the dicts are the caller's to change."""
        ...

    async def commit_profiles(self, writes: Sequence[tuple[Document, int]]) -> set[str]:
        """Write each profile if its stored version is still the expected one; return conflicts.
        Each written profile gets the token of its write in `written_by`.

        The store may keep the written dicts (a cache): the caller must not change them after.
        """
        ...

    async def clear_outboxes(
        self, delivered: Sequence[tuple[str, int, datetime | None]]
    ) -> set[tuple[str, int]]:
        """Empty each delivered outbox, set the profile's own due time and move its version on,
        if its stored version is still the one written with that outbox; returns the (profile id,
        version) of those it cleared."""
        ...

    async def mark_delivered(self, writes: Collection[str]) -> None:
        """Record that the outboxes these writes (by their tokens) left in profiles went out."""
        ...

    async def marked_writes(
        self, writes: Collection[tuple[str, int, str | None]]
    ) -> set[tuple[str, int]]:
        """Which of these profile writes (profile id, version, token if known) were marked
        delivered: by their token, or by the marker an older version made for that version."""
        ...

    async def outboxes_now(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        """The stored `version`, `written_by`, `carried_from` and `outbox` of these profiles,
        read from the store itself (never a cached copy)."""
        ...

    async def drop_unreferenced_markers(self, older_than: timedelta) -> int:
        """Delete the delivered markers older than this (on the wall clock that timed them)
        that no outbox names any more; returns how many went."""
        ...

    async def profile_ids_to_sweep(self, now: datetime, limit: int) -> list[str]:
        """Profiles whose `due_at` has come: a time-driven answer, or an outbox not cleared."""
        ...

    def matching_profile_ids(
        self,
        project_id: str,
        audience_id: str,
        rule: Group | None,
        now: datetime,
        chunk: int,
        counted_events: Sequence[str] = (),
    ) -> AsyncIterator[list[str]]:
        """Profiles the rule matches now, by the store's own query engine, in chunks of one
        query's results."""
        ...

    async def count_profiles(self, project_id: str) -> int: ...

    async def save_identity_links(self, links: Sequence[Document]) -> None:
        """Upsert `identity_links` documents by `_id`; a key linked before keeps its user."""
        ...


class MembershipStore(Protocol):
    async def count_changes(
        self,
        changes: Sequence[MembershipChanged],
        provenance: Provenance = NO_PROVENANCE,
        issue_by: float = float("inf"),
    ) -> None:
        """Move the counts once per change; raise rather than issue a write after `issue_by`
        (time.monotonic())."""
        ...

    def settle(
        self, changes: Sequence[MembershipChanged], provenance: Provenance = NO_PROVENANCE
    ) -> None:
        """The changes' outboxes are marked delivered: no replay of them will come, and counters
        may forget their tokens."""
        ...

    async def member_profile_ids(self, audience_id: str) -> list[str]:
        """The profiles holding the audience in their `audiences`."""
        ...

    async def member_count(self, audience_id: str) -> int: ...

    async def reconcile_counts(self, audience_ids: Sequence[str]) -> None: ...

    async def adopt_membership_documents(self) -> int:
        """Take the join times of memberships older versions kept in their own collection."""
        ...

    async def record_history(self, audience_id: str, project_id: str, now: datetime) -> None:
        """Upsert the current hour's size-history point of the audience."""
        ...


class AudienceCatalog(Protocol):
    async def active_audiences(self) -> list[Document]: ...

    async def audience(self, audience_id: str) -> Document | None: ...

    async def set_state(self, audience_id: str, fields: Document) -> None: ...

    async def state(self, audience_id: str) -> Document | None: ...

    async def claim_build(
        self,
        audience_id: str,
        version: int,
        owner: str,
        now: datetime,
        lease: timedelta,
        refresh_requested_at: datetime | None = None,
    ) -> bool:
        """Take the build of this rule version (or a refresh of it, once per request)."""
        ...


class MembershipPublisher(Protocol):
    async def publish(self, changes: Sequence[MembershipChanged]) -> None: ...
