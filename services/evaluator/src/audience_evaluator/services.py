"""Use cases of the evaluator: fold events, decide memberships, time-driven changes, lifecycle."""

import asyncio
import contextlib
import heapq
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Literal

import structlog

from audience_evaluator.errors import Contention, LateCount
from audience_evaluator.identity import identity_links
from audience_evaluator.metrics import MARK_CHECKS, STAGE_SECONDS, SWEEP_SCANS
from audience_evaluator.outbox import (
    carried_from,
    change_event_id,
    deciding_write,
    outbox_entry_key,
    outbox_writers,
    restored_change,
    stored_change,
)
from audience_evaluator.ports import (
    AudienceCatalog,
    Document,
    MembershipPublisher,
    MembershipStore,
    ProfileStore,
    Provenance,
)
from audience_evaluator.profiles import (
    EVERYTHING,
    Profile,
    count_history,
    fold,
    linked_profile_id,
    merge_into,
    new_profile,
    profile_id,
    prune,
)
from audience_evaluator.registry import ActiveAudience, AudienceRegistry, compile_audience
from audience_shared.events import MembershipChanged, UserEventBase
from audience_shared.rules.predicate import normalize_now
from audience_shared.tasks import all_at_once

log = structlog.get_logger()

Reason = Literal["event", "time", "rule_change", "backfill", "archived", "refresh", "merged"]
Clock = Callable[[], datetime]

# A builder that stops renewing this long is presumed dead and its build is taken over.
BUILD_LEASE = timedelta(seconds=60)

# Conflicting writes (another evaluator or the sweeper touched the profile) are retried this often.
MAX_CONFLICT_ROUNDS = 8
# A delivery counts within COUNT_ISSUED_WITHIN_S of the last moment it knew which of its changes
# had been delivered elsewhere: its first profile write (before it, no other process could take
# its outbox over), or a check of the marks. Past MARKS_CHECKED_AFTER_S it checks the marks
# again first. Counters keep settled tokens longer than both (SETTLE_GRACE_S in the store
# adapter), so a change another process delivered meanwhile is either marked, or still
# recognised by its token.
MARKS_CHECKED_AFTER_S = 1.0
COUNT_ISSUED_WITHIN_S = 1.5
# Checks a slow count may make before the batch gives up (it is then redelivered and replayed).
COUNT_CHECKS = 5

# Outboxes written for events stay in their profiles once delivered, with a marker saying so: if
# the process dies before delivering one, the broker redelivers the events (their offsets are
# committed only after delivery) and whoever processes them replays it; the profile's next write
# drops it. Outboxes of the other paths (time, builds, archives) have no such redelivery: their
# profile is due for the sweeper OUTBOX_GRACE after the write, so an outbox a crash stranded is
# replayed, and a delivered one is cleared by a background write OUTBOX_CLEAR_DELAY after delivery
# (unless the profile's next write comes first and drops it for free).
OUTBOX_CLEAR_DELAY = timedelta(seconds=15)
OUTBOX_GRACE = timedelta(seconds=60)
# Delivered markers are kept at least this long, though no outbox names them any more: a delivery
# checks the marks of the writes its outbox came from within seconds of reading them. The markers
# are timed by the clocks of the processes that made them, so those may be this far apart.
MARKERS_KEPT = timedelta(hours=1)
# Delivered event outboxes this process remembers (so it need not ask the store for their markers).
DELIVERED_KEPT = 200_000
# Due times kept in memory at most (about 150 bytes each); past it, the store scan finds the rest.
DUE_INDEX_MAX = 2_000_000


@dataclass(frozen=True)
class Work:
    """What to do for one profile: events to fold and audiences to re-evaluate regardless."""

    events: tuple[UserEventBase, ...] = ()
    audiences: frozenset[str] = frozenset()
    due_only: bool = False


class MembershipService:
    """Keeps memberships exact: every path (events, time, backfill, archive) goes through here."""

    def __init__(
        self,
        profiles: ProfileStore,
        memberships: MembershipStore,
        publisher: MembershipPublisher,
        registry: AudienceRegistry,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._profiles = profiles
        self._memberships = memberships
        self._publisher = publisher
        self._registry = registry
        self._clock = clock
        self._monotonic = monotonic  # the deadlines of deliveries (never the domain's time)
        # One process() at a time in this process: the consumer, the sweeper and builds all
        # read-modify-write profiles, and would otherwise only lose rounds to each other's
        # version guards. Builds take it per chunk, so live events interleave with a backfill.
        self._lock = asyncio.Lock()
        # Outboxes this process delivered that no write has dropped yet: profile id → (version
        # written, the profile's due time without its outbox, when delivered if a background
        # write is to clear it, else None). The store keeps a marker of each write whose outboxes
        # went out too, so another process (or this one, restarted) does not deliver them again.
        self._delivered: dict[str, tuple[int, datetime | None, datetime | None]] = {}
        # Due times this process wrote (profile id → due_at, and a heap of them in time order),
        # so the sweeper finds them without scanning the store.
        self._due_at: dict[str, datetime] = {}
        self._due_heap: list[tuple[datetime, str]] = []

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold off this process's processing (and so its deliveries) for the block."""
        async with self._lock:
            yield

    async def apply_user_events(self, events: Sequence[UserEventBase]) -> int:
        """Fold a batch of events in; returns how many membership changes it caused."""
        work: dict[str, list[UserEventBase]] = defaultdict(list)
        for event in events:
            work[profile_id(event.project_id, event.user_id)].append(event)
        return await self.process(
            {
                pid: Work(events=tuple(sorted(items, key=lambda e: e.timestamp)))
                for pid, items in work.items()
            },
            reason="event",
        )

    async def process(
        self,
        work: Mapping[str, Work],
        reason: Reason,
        archived: frozenset[str] = frozenset(),
    ) -> int:
        """Apply work to profiles with version-guarded writes, retrying conflicts on fresh reads."""
        async with self._lock:
            return await self._process(work, reason, archived)

    async def _process(
        self,
        work: Mapping[str, Work],
        reason: Reason,
        archived: frozenset[str],
    ) -> int:
        pending = dict(work)
        changes: list[MembershipChanged] = []
        committed: list[tuple[str, int, datetime | None]] = []
        # Tokens of the writes that left those outboxes: marked delivered at the end.
        writes_to_mark: set[str] = set()
        # Outboxes to deliver: profile id → (the version written, its changes), and whether any
        # of them was taken over from another write.
        spans: dict[str, tuple[int, list[MembershipChanged]]] = {}
        replayed = False
        # The write that decided each change to deliver: the counters record it (see Provenance).
        decided_by: dict[str, str] = {}
        carried: dict[str, str | None] = {}
        first_write_at: float | None = None
        identity_docs: list[Document] = []
        now = self._clock()
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not pending:
                break
            links = {
                pid: {
                    linked
                    for e in item.events
                    if (linked := linked_profile_id(e)) and linked != pid
                }
                for pid, item in pending.items()
            }
            wanted = set(pending).union(*links.values())
            with STAGE_SECONDS.labels("read").time():
                stored = await self._profiles.load_profiles(sorted(wanted))
                delivered = await self._delivered_outboxes(stored.values())
            evaluating = time.perf_counter()
            expected: dict[str, int] = {}
            outboxes: dict[str, list[MembershipChanged]] = defaultdict(list)
            redirected: dict[str, Work] = {}

            for pid, item in pending.items():
                profile = stored.get(pid)
                if profile is not None and profile.get("merged_into"):
                    # Events for a merged-away visitor belong to the user it became.
                    target = profile["merged_into"]
                    before = redirected.get(target, Work())
                    redirected[target] = Work(events=before.events + item.events)
                    continue
                if profile is None:
                    if not item.events:
                        continue  # nothing to evaluate for a user we have never seen
                    first = item.events[0]
                    profile = stored[pid] = new_profile(first.project_id, first.user_id)
                sources = [
                    stored[linked] for linked in sorted(links.get(pid, ())) if linked in stored
                ]
                for touched in (profile, *sources):
                    self._touch(touched, expected, outboxes, delivered, carried)
                decided = self._apply(profile, item, reason, archived, sources)
                if decided is not None:
                    outboxes[pid].extend(decided)
                for source in sources:
                    outboxes[source["_id"]].extend(self._retire(source))
            writes: list[tuple[Profile, int]] = []
            for pid, version in expected.items():
                profile = stored[pid]
                # "_dirty" marks an in-memory change; it never reaches the store.
                if not profile.pop("_dirty", False) and not outboxes[pid]:
                    continue
                # Writing the profile drops a delivered outbox (only undelivered ones are in
                # `outboxes`), and makes a new one due for the sweeper in case this process dies.
                profile["outbox"] = [
                    stored_change(c, pid, carried[c.event_id])
                    if c.event_id in carried
                    else stored_change(c, pid, fresh=True)
                    for c in outboxes[pid]
                ]
                profile["version"] = version + 1
                due_at = _due_at(profile)
                if outboxes[pid] and reason != "event":
                    grace_at = now + OUTBOX_GRACE
                    due_at = grace_at if due_at is None else min(due_at, grace_at)
                profile["due_at"] = due_at
                writes.append((profile, version))
            if first_write_at is None and writes:
                first_write_at = self._monotonic()
            STAGE_SECONDS.labels("evaluate").observe(time.perf_counter() - evaluating)
            with STAGE_SECONDS.labels("write").time():
                conflicts = await self._profiles.commit_profiles(writes)
            # Links from the committed traits: the sync service maps list records to users by
            # them. Saved alongside the delivery, so the batch waits no longer for them than for
            # it; a crash before they are saved redelivers the events, whose replay relinks.
            identity_docs.extend(
                link
                for pid, item in pending.items()
                if pid in stored and pid not in conflicts
                for link in identity_links(stored[pid], item.events)
            )
            for profile, read_version in writes:
                if profile["_id"] in conflicts:
                    continue
                self._delivered.pop(profile["_id"], None)
                self._note_due(profile["_id"], profile.get("due_at"))
                if outboxes[profile["_id"]]:
                    changes.extend(outboxes[profile["_id"]])
                    decided_by.update(
                        (change.event_id, profile["written_by"])
                        for change in outboxes[profile["_id"]]
                        if change.event_id not in carried and profile.get("written_by")
                    )
                    spans[profile["_id"]] = (profile["version"], outboxes[profile["_id"]])
                    replayed |= any(c.version <= read_version for c in outboxes[profile["_id"]])
                    committed.append((profile["_id"], profile["version"], _due_at(profile)))
                    writes_to_mark.add(profile["written_by"])
            # A conflict on a merge source retries the whole user, so the merge stays atomic.
            retry = {
                pid for pid in pending if pid in conflicts or links.get(pid, set()) & conflicts
            }
            pending = {pid: pending[pid] for pid in retry}
            for target, extra in redirected.items():
                before = pending.get(target, Work())
                pending[target] = Work(events=before.events + extra.events)
        if pending:
            # Left for redelivery: the offsets of these events are not committed.
            raise ConflictingWrites(sorted(pending))
        written_at = self._monotonic() if first_write_at is None else first_write_at
        provenance = Provenance(decided=decided_by, carried=carried)
        if changes:
            await all_at_once(
                [
                    self._publish(changes),
                    self._count(changes, provenance, spans, replayed, written_at),
                    self._save_links(identity_docs),
                ]
            )
        else:
            await self._save_links(identity_docs)
        with STAGE_SECONDS.labels("mark").time():
            await self._profiles.mark_delivered(writes_to_mark)
        self._memberships.settle(changes, provenance)
        # Only outboxes with a grace (not written for events) are cleared in the background.
        delivered_at = self._clock() if reason != "event" else None
        for pid, version, due_at in committed:
            self._delivered[pid] = (version, due_at, delivered_at)
        self._forget_old_deliveries()
        return len(changes)

    def _forget_old_deliveries(self) -> None:
        """Keep at most DELIVERED_KEPT event outboxes in memory (their markers stay stored)."""
        if len(self._delivered) <= DELIVERED_KEPT:
            return
        # Down to nine tenths at once, so this runs once per many batches, not on every one.
        excess = len(self._delivered) - DELIVERED_KEPT * 9 // 10
        oldest = islice((pid for pid, (_, _, at) in self._delivered.items() if at is None), excess)
        for pid in list(oldest):
            del self._delivered[pid]

    def _note_due(self, pid: str, due_at: datetime | None) -> None:
        if due_at is None:
            self._due_at.pop(pid, None)
        elif len(self._due_at) < DUE_INDEX_MAX or pid in self._due_at:
            self._due_at[pid] = due_at
            heapq.heappush(self._due_heap, (due_at, pid))

    def due_profile_ids(self, now: datetime, limit: int) -> list[str]:
        """Profiles this process wrote whose due time has come (each returned once; processing
        one that is still due later notes it again)."""
        due: list[str] = []
        while self._due_heap and self._due_heap[0][0] <= now and len(due) < limit:
            at, pid = heapq.heappop(self._due_heap)
            if self._due_at.get(pid) == at:  # else superseded by a later write
                del self._due_at[pid]
                due.append(pid)
        return due

    async def _delivered_outboxes(self, profiles: Iterable[Profile]) -> set[tuple[str, int]]:
        """(profile id, version) of each read profile whose outbox was delivered already."""
        known: set[tuple[str, int]] = set()
        ask: list[tuple[str, int, str | None]] = []
        for profile in profiles:
            if not profile.get("outbox"):
                continue
            pid, version = profile["_id"], profile.get("version", 0)
            mine = self._delivered.get(pid)
            if mine is not None and mine[0] == version:
                known.add((pid, version))
            else:  # a crash left it, or another process delivered it
                ask.append((pid, version, profile.get("written_by")))
        if ask:
            known |= await self._profiles.marked_writes(ask)
        return known

    async def clear_delivered(self, older_than: timedelta = OUTBOX_CLEAR_DELAY) -> int:
        """Clear the outboxes delivered at least `older_than` ago that no write has dropped yet."""
        async with self._lock:
            cutoff = self._clock() - older_than
            ready = [
                (pid, version, due_at)
                for pid, (version, due_at, delivered_at) in self._delivered.items()
                if delivered_at is not None and delivered_at <= cutoff
            ]
            # Guarded by version: a profile written since keeps its newer outbox. The markers
            # stay until no outbox names them (see drop_unreferenced_markers).
            cleared = await self._profiles.clear_outboxes(ready)
            for pid, _version, due_at in ready:
                self._delivered.pop(pid, None)
                self._note_due(pid, due_at)  # the outbox's grace is over with it
        return len(cleared)

    @staticmethod
    def _touch(
        profile: Profile,
        expected: dict[str, int],
        outboxes: dict[str, list[MembershipChanged]],
        delivered: set[tuple[str, int]],
        carried: dict[str, str | None],
    ) -> None:
        """Remember the version a profile was read at, and take over its outbox: replayed if it
        was never delivered (a crash), dropped by this write if it was. A replayed change is
        carried with the token of the write that decided it if known, and the write names the
        writes it carried the outbox from (`carried_from`)."""
        pid = profile["_id"]
        if pid in expected:
            return
        expected[pid] = profile.get("version", 0)
        if not profile.get("outbox"):
            profile.pop("carried_from", None)
            return
        if (pid, expected[pid]) in delivered:
            profile.pop("carried_from", None)
            profile["_dirty"] = True
            return
        taken = [restored_change(profile, stored) for stored in profile["outbox"]]
        for stored, change in zip(profile["outbox"], taken, strict=True):
            outboxes[pid].append(change)
            carried[change.event_id] = deciding_write(profile, stored, change.version)
        profile["carried_from"] = carried_from(profile, min(change.version for change in taken))

    async def _save_links(self, identity_docs: list[Document]) -> None:
        with STAGE_SECONDS.labels("links").time():
            await self._profiles.save_identity_links(identity_docs)

    async def _publish(self, changes: list[MembershipChanged]) -> None:
        with STAGE_SECONDS.labels("publish").time():
            await self._publisher.publish(changes)

    async def _count(
        self,
        changes: list[MembershipChanged],
        provenance: Provenance,
        spans: Mapping[str, tuple[int, list[MembershipChanged]]],
        replayed: bool,
        known_at: float,
    ) -> None:
        """Count the changes, while they are published; the caller then marks the outboxes
        delivered and settles the changes. The memberships themselves are in the profiles,
        written already.

        A counter keeps a token of each change (its own, or its deciding write's) until the
        change is settled, so a replay after a crash between counting and marking is recognised;
        a replay of the events is recognised by subscribers, by event id. So the two are
        independent, and the broker's acknowledgement and the counter writes are waited for at
        once. A change another process delivered while this one was delivering it too (it took
        the outbox over, or this process took over its outbox) is recognised by the marks,
        checked before counting when this batch replays an outbox or is late (see
        MARKS_CHECKED_AFTER_S), or else by the token, which the counter still holds. Such a
        change is published again but not counted again."""
        elsewhere: set[str] = set()
        check = replayed
        for attempt in range(COUNT_CHECKS):
            late = self._monotonic() - known_at > MARKS_CHECKED_AFTER_S
            if check or late:
                MARK_CHECKS.labels(why="late" if late else "replayed").inc()
                known_at = self._monotonic()
                elsewhere = await self._delivered_elsewhere(spans)
            try:
                # A retry after a late round is safe: what landed before kept its tokens.
                with STAGE_SECONDS.labels("count").time():
                    await self._memberships.count_changes(
                        [c for c in changes if c.event_id not in elsewhere]
                        if elsewhere
                        else changes,
                        provenance,
                        issue_by=known_at + COUNT_ISSUED_WITHIN_S,
                    )
                return
            except LateCount:
                if attempt == COUNT_CHECKS - 1:
                    raise
                check = True

    async def _delivered_elsewhere(
        self, spans: Mapping[str, tuple[int, list[MembershipChanged]]]
    ) -> set[str]:
        """Event ids of changes another process delivered: those a later write of their profile
        dropped (a write drops only an outbox marked delivered), and those a write that held
        them, from the one that decided them on, was marked for. The profile as stored now
        names those writes: it holds our write's outbox, or one carried on from it."""
        now = await self._profiles.outboxes_now(sorted(spans))
        dropped: set[str] = set()
        writes: set[tuple[str, int, str | None]] = set()
        for pid, (written, outbox) in spans.items():
            current = now.get(pid, {})
            newest = max(current.get("version", written), written)
            if newest > written:
                held = {outbox_entry_key(entry) for entry in current.get("outbox") or ()}
                dropped.update(
                    change.event_id
                    for change in outbox
                    if (change.audience_id, change.version) not in held
                )
            # Every write since the oldest change, by its token where the profile names it (an
            # older version named none, and marked outboxes by profile and version instead).
            tokens = dict(outbox_writers(current))
            oldest = min(change.version for change in outbox)
            writes.update((pid, v, tokens.get(v)) for v in range(oldest, newest + 1))
        newest_marked: dict[str, int] = {}
        for pid, version in await self._profiles.marked_writes(writes):
            newest_marked[pid] = max(version, newest_marked.get(pid, version))
        return dropped | {
            change.event_id
            for pid, (_written, outbox) in spans.items()
            for change in outbox
            if newest_marked.get(pid, -1) >= change.version
        }

    def _apply(
        self,
        profile: Profile,
        item: Work,
        reason: Reason,
        archived: frozenset[str],
        sources: list[Profile],
    ) -> list[MembershipChanged] | None:
        """Fold and re-evaluate one profile in memory; None when nothing at all changed."""
        # Normalized once here, not by each of the (up to every) audience evaluations.
        now = normalize_now(self._clock())
        project_id = profile["project_id"]
        counters = self._registry.counters(project_id)
        # A user seen for the first time is evaluated against every audience: conditions such
        # as "did not purchase" match users whose events never mention what they read.
        changed: set[str] = {EVERYTHING} if profile.get("version", 0) == 0 else set()
        for source in sources:
            changed |= merge_into(profile, source, now)
        # Counters a new audience needs are rebuilt from the history before new events count.
        changed |= count_history(profile, counters, now)
        for event in item.events:
            changed |= fold(profile, event, counters, now)
        if item.events and not changed and not item.audiences and not item.due_only:
            return None  # every event was a redelivery
        if changed:
            profile["_dirty"] = True
        prune(profile, now)
        due: dict[str, datetime] = dict(profile.get("due", {}))
        due_before = dict(due)
        members: list[str] = list(profile.get("audiences", []))
        joined: dict[str, datetime] = dict(profile.get("joined", {}))
        decided: list[MembershipChanged] = []
        for audience_id in archived:
            if audience_id in members:
                members.remove(audience_id)
                decided.append(self._change(profile, audience_id, "membership.exited", reason, now))
            due.pop(audience_id, None)
        # Audiences come in dependency order, so one whose answer changes here adds those that
        # refer to it before they come up.
        affected = self._registry.affected(project_id, changed)
        for audience in self._registry.for_project(project_id):
            due_now = audience.id in due and due[audience.id] <= now
            if not (audience.id in item.audiences or due_now or audience.id in affected):
                continue
            profile["audiences"] = members
            evaluation = audience.predicate.evaluate(profile, now)
            if evaluation.next_change_at is not None:
                due[audience.id] = evaluation.next_change_at
            else:
                due.pop(audience.id, None)
            was_member = audience.id in members
            if evaluation.matched and not was_member:
                members.append(audience.id)
                joined[audience.id] = now
                kind: Literal["membership.entered", "membership.exited"] = "membership.entered"
            elif not evaluation.matched and was_member:
                members.remove(audience.id)
                kind = "membership.exited"
            else:
                continue
            changed.add(f"audience:{audience.id}")
            affected |= self._registry.referring(project_id, audience.id)
            step_reason: Reason = "time" if due_now and not item.events else reason
            decided.append(self._change(profile, audience.id, kind, step_reason, now))
        profile["audiences"] = members
        if not item.events and not sources and not decided and due == due_before:
            return None  # a re-evaluation that changed nothing needs no write
        profile["_dirty"] = True
        profile["due"] = due
        # Join times of the audiences held (a time older versions did not record stays absent).
        profile["joined"] = {aid: joined[aid] for aid in members if aid in joined}
        return decided

    def _retire(self, source: Profile) -> list[MembershipChanged]:
        """A merged-away profile leaves every audience: its user now counts once, as the target."""
        now = self._clock()
        exits = [
            self._change(source, audience_id, "membership.exited", "merged", now)
            for audience_id in source.get("audiences", [])
        ]
        source["audiences"] = []
        source["joined"] = {}
        source["due"] = {}
        source["_dirty"] = True
        return exits

    @staticmethod
    def _change(
        profile: Profile,
        audience_id: str,
        kind: Literal["membership.entered", "membership.exited"],
        reason: Reason,
        now: datetime,
    ) -> MembershipChanged:
        version = profile.get("version", 0) + 1
        # Built from values this service produced: without validation (thousands a batch).
        return MembershipChanged.trusted(
            type=kind,
            event_id=change_event_id(profile["_id"], audience_id, version),
            project_id=profile["project_id"],
            audience_id=audience_id,
            user_id=profile["user_id"],
            occurred_at=now,
            version=version,
            reason=reason,
        )


def _due_at(profile: Profile) -> datetime | None:
    """When the profile's next time-driven change is due (what the sweeper looks for)."""
    due: dict[str, datetime] = profile.get("due") or {}
    return min(due.values()) if due else None


class ConflictingWrites(Contention):
    """Profiles kept changing under us; the batch is not acknowledged and will be redelivered."""

    def __init__(self, profile_ids: list[str]) -> None:
        super().__init__(f"{len(profile_ids)} profiles kept conflicting: {profile_ids[:5]}")
        self.profile_ids = profile_ids


class AudienceLifecycleService:
    """Creates, rebuilds and archives audiences: pending → building → ready (or failed)."""

    def __init__(
        self,
        catalog: AudienceCatalog,
        profiles: ProfileStore,
        memberships: MembershipStore,
        membership_service: MembershipService,
        registry: AudienceRegistry,
        clock: Clock,
        chunk: int,
        owner: str = "evaluator",
    ) -> None:
        self._owner = owner
        self._catalog = catalog
        self._profiles = profiles
        self._memberships = memberships
        self._service = membership_service
        self._registry = registry
        self._clock = clock
        self._chunk = chunk

    async def load_all(self) -> None:
        audiences = []
        for doc in await self._catalog.active_audiences():
            try:
                audiences.append(compile_audience(doc))
            except Exception as exc:
                log.exception("audience.compile_failed", audience_id=doc["_id"])
                await self._catalog.set_state(doc["_id"], {"status": "failed", "error": str(exc)})
        self._registry.replace_all(audiences)

    async def resume_unfinished(self) -> None:
        """After a restart, finish any build that was interrupted (status never lies)."""
        for audience in list(self._registry.by_id.values()):
            state = await self._catalog.state(audience.id)
            if (
                not state
                or state.get("rule_version") != audience.version
                or state.get("status") not in ("ready",)
            ):
                await self.build(audience.id)

    async def on_change(
        self,
        audience_id: str,
        change: str,
        version: int,
        requested_at: datetime | None = None,
    ) -> None:
        doc = await self._catalog.audience(audience_id)
        if doc is None or doc.get("archived") or change == "deleted":
            await self.archive(audience_id)
            return
        if doc["rule_version"] > version:
            return  # a newer change is on its way; it will do the work
        state = await self._catalog.state(audience_id)
        if (
            change != "refresh_requested"
            and state
            and state.get("rule_version") == doc["rule_version"]
            and state.get("status") == "ready"
        ):
            return  # redelivered change already built
        await self.build(
            audience_id,
            refresh_requested_at=requested_at if change == "refresh_requested" else None,
        )

    async def build(self, audience_id: str, refresh_requested_at: datetime | None = None) -> None:
        doc = await self._catalog.audience(audience_id)
        if doc is None or doc.get("archived"):
            return
        try:
            audience = compile_audience(doc)
        except Exception as exc:
            await self._catalog.set_state(
                audience_id,
                {"status": "failed", "error": str(exc), "rule_version": doc["rule_version"]},
            )
            return
        # Live events evaluate the new rule from this moment; the backfill covers everyone else.
        self._registry.put(audience)
        if not await self._catalog.claim_build(
            audience_id,
            audience.version,
            self._owner,
            self._clock(),
            BUILD_LEASE,
            refresh_requested_at=refresh_requested_at,
        ):
            return  # another evaluator process is building this version
        await self._catalog.set_state(
            audience_id,
            {
                "project_id": audience.project_id,
                "status": "building",
                "progress": 0.0,
                "rule_version": audience.version,
                "error": None,
            },
        )
        await self._backfill(audience)
        # The incremental count is exact through the backfill too (it went through the same
        # path); recounting here would race the live events of the build.
        count = await self._memberships.member_count(audience_id)
        now = self._clock()
        await self._catalog.set_state(
            audience_id,
            {
                "status": "ready",
                "progress": 1.0,
                "last_refreshed_at": now,
                "updated_at": now,
            },
        )
        await self._memberships.record_history(audience_id, audience.project_id, now)
        log.info("audience.built", audience_id=audience_id, members=count)

    async def reconcile(self) -> None:
        """Exact counts for every live audience, then this hour's size-history point of each."""
        audiences = list(self._registry.by_id.values())
        async with self._service.exclusive():  # none of this process's deliveries in between
            await self._memberships.reconcile_counts([audience.id for audience in audiences])
        for audience in audiences:
            await self._memberships.record_history(audience.id, audience.project_id, self._clock())

    async def drop_unneeded_markers(self) -> int:
        """Delete the delivered markers no outbox needs any more (kept MARKERS_KEPT at least)."""
        dropped = await self._profiles.drop_unreferenced_markers(MARKERS_KEPT)
        log.info("markers.dropped", count=dropped)
        return dropped

    async def _backfill(self, audience: ActiveAudience) -> None:
        """Re-evaluate matching profiles and current members, in chunks, via the live path."""
        now = self._clock()
        total = max(await self._profiles.count_profiles(audience.project_id), 1)
        seen: set[str] = set()
        done = 0
        chunks = self._profiles.matching_profile_ids(
            audience.project_id,
            audience.id,
            audience.rule,
            now,
            self._chunk,
            # Profiles whose counters for this rule are not built yet: the store cannot
            # tell whether they match until the counters are rebuilt from their history.
            counted_events=sorted({spec.event for spec in audience.refs.counters.values()}),
        )
        async for ids in chunks:
            seen.update(ids)
            await self._service.process(
                {pid: Work(audiences=frozenset({audience.id})) for pid in ids}, reason="backfill"
            )
            done += len(ids)
            await self._catalog.set_state(
                audience.id,
                {
                    "progress": min(done / total, 0.99),
                    "build_lease_until": self._clock() + BUILD_LEASE,
                },
            )
        leavers = [
            pid
            for pid in await self._memberships.member_profile_ids(audience.id)
            if pid not in seen
        ]
        for start in range(0, len(leavers), self._chunk):
            chunk = leavers[start : start + self._chunk]
            await self._service.process(
                {pid: Work(audiences=frozenset({audience.id})) for pid in chunk},
                reason="rule_change",
            )

    async def archive(self, audience_id: str) -> None:
        self._registry.remove(audience_id)
        members = await self._memberships.member_profile_ids(audience_id)
        for start in range(0, len(members), self._chunk):
            chunk = members[start : start + self._chunk]
            await self._service.process(
                {pid: Work() for pid in chunk}, reason="archived", archived=frozenset({audience_id})
            )
        await self._catalog.set_state(
            audience_id, {"status": "archived", "updated_at": self._clock()}
        )


# A store scan for due profiles that took t seconds waits SCAN_SPACING * t before the next.
SCAN_SPACING = 600.0


class SweepService:
    """Re-evaluates profiles whose time-driven answer is due (entries and exits with no event).

    Due profiles come from two places: the due times this process wrote (kept in memory by the
    membership service), looked at on every pass, and a scan of the store, which also finds what
    other processes wrote (one that died, or this one before a restart). What others wrote
    matters when their partitions come to this process, so a scan runs at startup and right after
    every partition assignment (`request_scan`); between those, it is a safety net (a process
    that gave partitions away still sweeps the due times it wrote for them). Without an index on
    `due_at` (FerretDB) the scan reads every profile (about a second of the store's CPU at 50,000
    profiles, which every write waits through), so it waits SCAN_SPACING times its own duration
    before the next: about every second on MongoDB, every ten minutes over such a FerretDB
    store.
    """

    def __init__(
        self,
        profiles: ProfileStore,
        membership_service: MembershipService,
        clock: Clock,
        scan_spacing: float = SCAN_SPACING,
    ) -> None:
        self._profiles = profiles
        self._service = membership_service
        self._clock = clock
        # A scan that took t seconds is not run again for scan_spacing * t seconds.
        self._scan_spacing = scan_spacing
        self._next_scan = 0.0  # time.monotonic() of the next store scan
        self._scan_requests = 0

    def request_scan(self) -> None:
        """Scan the store on the next pass (this process was just given partitions)."""
        self._next_scan = 0.0
        self._scan_requests += 1

    async def sweep_once(self, limit: int = 1000) -> int:
        """One pass; reads run unlocked, only the writes take the profile lock."""
        await self._service.clear_delivered()
        return await self._sweep_due(limit)

    async def _sweep_due(self, limit: int) -> int:
        now = self._clock()
        ids = set(self._service.due_profile_ids(now, limit))
        if time.monotonic() >= self._next_scan:
            started, requests = time.monotonic(), self._scan_requests
            ids.update(await self._profiles.profile_ids_to_sweep(now, limit))
            took = time.monotonic() - started
            SWEEP_SCANS.observe(took)
            if self._scan_requests == requests:  # else partitions came during it: scan again
                self._next_scan = time.monotonic() + took * self._scan_spacing
        if not ids:
            return 0
        # Touching a profile also replays an outbox a crash left undelivered.
        return await self._service.process({pid: Work(due_only=True) for pid in ids}, "time")
