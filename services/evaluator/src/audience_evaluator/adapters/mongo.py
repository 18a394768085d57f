"""MongoDB adapters of the evaluator: profiles, memberships, audience state."""

import asyncio
import contextlib
import functools
import hashlib
import random
import secrets
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import structlog
from bson.binary import Binary
from bson.codec_options import CodecOptions
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from audience_evaluator.errors import Contention, LateCount
from audience_evaluator.metrics import PROFILE_CACHE, PROFILE_CACHE_ENCODED
from audience_evaluator.outbox import outbox_audience, outbox_entry_key, outbox_writers
from audience_evaluator.ports import NO_PROVENANCE, Provenance
from audience_shared.adapters.mongo_rules import compile_mongo_filter
from audience_shared.counters import (
    COUNT_FIELDS,
    COUNTER_SLOTS,
    all_counter_ids,
    counter_id,
    counter_ids,
    summed_counts,
)
from audience_shared.events import MembershipChanged
from audience_shared.history import history_bucket, history_point_id
from audience_shared.profile import encode_key, join_times, stored_join_times
from audience_shared.rules import Group
from audience_shared.store import (
    CONCURRENT_COMMANDS,
    GUARDED_REPLACE_CHUNK,
    ID_LOOKUP_CHUNK,
    INSERT_CHUNK,
    apply_one,
    bulk_write_chunked,
    delete_by_ids,
    find_by_ids,
)
from audience_shared.tasks import all_at_once

Document = dict[str, Any]
log = structlog.get_logger()
DUPLICATE_KEY = 11000
# A counter keeps tokens of the changes it applied until they are settled: their outbox is marked
# delivered, so no process that reads the profile from then on replays them. The changes a profile
# write decided are recorded by the write's token, once for all of them (a batch's counter write
# adds a few tokens, not one per change); a change carried over from an earlier write by its own.
# A process that may still count a change without having seen the mark issues its counter write
# within COUNT_ISSUED_WITHIN_S (services.py) of its commit or of its last check of the marks; the
# grace is that plus the time a write may take to land.
SETTLE_GRACE_S = 3.0
# Tokens a counter keeps at most, a bound on its size (340 kB) that a sustained 6,000 changes a
# second to one audience would reach within the grace. Otherwise only changes nobody settled
# stay longer than the grace (their process died after counting them, and no replay settled
# them since).
APPLIED_KEPT = 20_000
# How long a process remembers settled tokens it has not written out yet (its next write of the
# audience's counter drops them): an audience that stops changing keeps a few in its counter.
SETTLED_REMEMBERED_S = 600.0
# Tokens of a counter written before changes were settled, or before a write's changes were
# recorded by its token, kept this long after the upgrade.
BEFORE_SETTLING_KEPT_S = 600.0
# Counters that record a write's changes by the write's token.
COUNTER_FORMAT = 2
COUNT_ROUNDS = 8
# Writers that lost a counter race wait a random share of this (times the round) before trying
# again, so the same writers do not collide again in lockstep.
COUNT_BACKOFF_S = 0.005
CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(tz_aware=True)
# Identity link keys a process remembers as stored: about 100 bytes each.
LINKED_KEPT = 100_000
# Profile fields only the evaluator reads, stored together as one BSON value (`packed`): FerretDB
# keeps a type schema beside every value of a stored document, and these hold most of a profile's
# values, so spread out they cost the store about a third more CPU per profile write (measured
# on the benchmark's profiles: 155 µs against 113 µs). Nothing queries them in the store; a
# profile written before keeps them as fields until its next write.
PACKED_FIELDS = ("seen", "tracked", "trait_times", "due", "counted", "list_times")
PACKED = "packed"


def packed_profile(profile: Document) -> Document:
    """A profile as the store keeps it: the evaluator's own fields in one BSON value, and the
    join times as a list in the order of `audiences` (`joined_at`, see audience_shared.profile)."""
    stored = {
        name: value
        for name, value in profile.items()
        if name not in PACKED_FIELDS and name != "joined"
    }
    own = {name: profile[name] for name in PACKED_FIELDS if name in profile}
    stored[PACKED] = Binary(bson.encode(own))
    stored["joined_at"] = stored_join_times(
        profile.get("audiences") or (), profile.get("joined") or {}
    )
    return stored


def unpacked_profile(doc: Document) -> Document:
    """A stored profile as the evaluator works on it, its join times a map (`joined`); one
    written before packing, or with the map, is read as it is."""
    packed = doc.pop(PACKED, None)
    if packed is not None:
        doc.update(bson.decode(packed, codec_options=CODEC_OPTIONS))
    if "joined_at" in doc:
        doc["joined"] = join_times(doc)  # the map, if an older version wrote one since
        del doc["joined_at"]
    return doc


@functools.lru_cache(maxsize=65_536)
def change_token(event_id: str) -> str:
    """A change id as 16 hex characters: the counter keeps thousands of them. Cached, as a
    change is counted, then settled, by the same process moments apart."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def applied_tokens(doc: Document | None) -> list[str]:
    """The applied-change tokens of a counter document, oldest first.

    They are kept as one space-separated string, not an array: FerretDB reads and writes a
    string of thousands of tokens ten times faster than an array of as many elements.
    """
    applied = (doc or {}).get("applied") or ""
    if isinstance(applied, list):  # written before tokens were joined
        return [change_token(event_id) for event_id in applied]
    return applied.split()


def _settling(doc: Document, now: float) -> Document:
    """The counter as this version keeps it. The tokens of one written by an older version (one
    per change, or the last thousands unsettled) are moved to `applied_before`, kept for
    BEFORE_SETTLING_KEPT_S (a replay of what an older process counted comes within it)."""
    if doc.get("format") == COUNTER_FORMAT:
        if doc.get("applied_before") and doc.get("applied_before_until", 0) <= now:
            return {k: v for k, v in doc.items() if not k.startswith("applied_before")}
        return doc
    before = " ".join([*doc.get("applied_before", "").split(), *applied_tokens(doc)])
    # `settling` stays for older versions, which would otherwise move the tokens again.
    upgraded = {**doc, "format": COUNTER_FORMAT, "settling": True, "applied": ""}
    if before:
        upgraded |= {"applied_before": before, "applied_before_until": now + BEFORE_SETTLING_KEPT_S}
    return upgraded


# A write's token as a counter records it, told apart from a change's own token by this mark.
WRITE_MARK = "@"


def recorded_token(change: MembershipChanged, provenance: Provenance) -> str:
    """The token a counter records a change by: its write's, or (carried over) its own."""
    written = provenance.decided.get(change.event_id)
    return WRITE_MARK + written if written else change_token(change.event_id)


# A write token ends in this mark and the counting slot of the process that wrote it.
SLOT_MARK = "."


def write_token(slot: int | None) -> str:
    """A new write's token, naming the slot its changes are counted in (None: the base)."""
    token = secrets.token_hex(8)
    return token if slot is None else f"{token}{SLOT_MARK}{slot}"


@functools.lru_cache(maxsize=4096)
def token_slot(token: str | None) -> int | None:
    """The counting slot a write token names; None (the base document) for a token without one,
    as older versions wrote them, whose processes counted every change there. Cached: a batch
    asks it for each of its changes, twice (count and settle), of a few tokens."""
    if not token:
        return None
    _, mark, slot = token.rpartition(SLOT_MARK)
    return int(slot) if mark and slot.isdecimal() and int(slot) < COUNTER_SLOTS else None


def counted_in(change: MembershipChanged, provenance: Provenance) -> str:
    """The counter document a change is counted in: the slot its deciding write names, so every
    process that delivers it (the decider, or one that carried it over) counts it in the same
    document, where the tokens that recognise a replay are."""
    written = provenance.decided.get(change.event_id) or provenance.carried.get(change.event_id)
    return counter_id(change.audience_id, token_slot(written))


def _counted(
    doc: Document, items: Sequence[MembershipChanged], settled: set[str], provenance: Provenance
) -> Document | None:
    """The counter document with the not-yet-applied changes applied and the settled tokens
    dropped; None if every change was applied already (nothing to write).

    A change was applied if the counter holds its deciding write's token (that write's delivery
    counted all its changes) or its own (a process that carried it over counted it, or a version
    that recorded every change so). A change's own token is computed only when the counter holds
    any: most of a batch's changes are its own writes', and there are thousands."""
    doc = _settling(doc, time.time())
    applied = applied_tokens(doc)
    if settled:
        applied = [token for token in applied if token not in settled]
    seen = set(applied).union(doc.get("applied_before", "").split())
    own_tokens_seen = any(not token.startswith(WRITE_MARK) for token in seen)
    counted: set[str] = set()  # event ids of the changes this write counts
    recorded: dict[str, None] = {}  # the tokens it adds, in order
    entered = exited = 0
    for change in items:
        event_id = change.event_id
        if event_id in counted:
            continue
        written = provenance.decided.get(event_id)
        if written is not None:
            if WRITE_MARK + written in seen:
                continue  # this write's changes were counted (a retry)
            if own_tokens_seen and change_token(event_id) in seen:
                continue  # a process that carried the change over counted it
            recorded[WRITE_MARK + written] = None
        else:
            decided_by = provenance.carried.get(event_id)
            own = change_token(event_id)
            if own in seen or (decided_by is not None and WRITE_MARK + decided_by in seen):
                continue  # counted by its deciding write's delivery, or by another carrier
            recorded[own] = None
        counted.add(event_id)
        if change.type == "membership.entered":
            entered += 1
        else:
            exited += 1
    if not entered and not exited:
        return None
    applied.extend(recorded)
    return {
        **doc,
        "member_count": doc.get("member_count", 0) + entered - exited,
        "entered_total": doc.get("entered_total", 0) + entered,
        "exited_total": doc.get("exited_total", 0) + exited,
        "applied": " ".join(applied[-APPLIED_KEPT:]),
        "count_version": doc.get("count_version", 0) + 1,
    }


class CountConflict(Contention):
    """Counters kept changing under us; the batch fails and its outboxes are replayed."""

    def __init__(self, counter_ids: list[str]) -> None:
        super().__init__(f"{len(counter_ids)} counter documents kept conflicting")


def _older_marker_id(profile_id: str, version: int) -> str:
    """The delivered marker older versions kept per outbox (this one marks whole writes)."""
    return f"{profile_id}|{version}"


def _write_marker_names(profile_id: str, version: int, token: str | None) -> list[str]:
    """The markers that say a profile write's outbox went out: its token's, or (made by an
    older version) the one of that profile version."""
    older = _older_marker_id(profile_id, version)
    return [token, older] if token else [older]


def _marker_names(doc: Document) -> set[str]:
    """The markers a stored profile's outbox may still be looked up by: those of the writes
    that held it, and those older versions made for the versions since its oldest change (an
    older version carried outboxes on without naming the writes they came from)."""
    names = {token for _version, token in outbox_writers(doc)}
    version = doc.get("version", 0)
    oldest = min((outbox_entry_key(entry)[1] for entry in doc.get("outbox") or ()), default=version)
    names.update(_older_marker_id(doc["_id"], v) for v in range(oldest, version + 1))
    return names


class ProfileCache:
    """The profiles this process wrote last, least recently used out first.

    Only the evaluator writes profiles, and every write is guarded by the version it read, so a
    cached profile another process has changed since is caught by the guard: the write conflicts,
    the entry is dropped, and the retry reads the store.

    The most recent `decoded_capacity` entries are kept as the dicts that were written, handed
    out without a copy: decoding a profile's BSON (its dates made timezone-aware) cost a fifth of
    the evaluator's CPU. A taken entry leaves the cache until its next write puts it back, so a
    dict is never shared. Older entries are kept as BSON (a seventh of the memory) and decoded
    when taken.
    """

    def __init__(self, capacity: int, decoded_capacity: int) -> None:
        self._capacity = capacity
        self._decoded_capacity = min(decoded_capacity, capacity)
        self._decoded: OrderedDict[str, Document] = OrderedDict()
        self._encoded: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._decoded) + len(self._encoded)

    @property
    def decoded_entries(self) -> int:
        return len(self._decoded)

    def take(self, profile_id: str) -> Document | None:
        """The cached profile, now the caller's (it is no longer cached)."""
        doc = self._decoded.pop(profile_id, None)
        if doc is not None:
            return doc
        raw = self._encoded.pop(profile_id, None)
        return None if raw is None else bson.decode(raw, codec_options=CODEC_OPTIONS)

    def put(self, doc: Document) -> None:
        """Cache a profile as just written; the caller must not change the dict afterwards."""
        if self._capacity <= 0:
            return
        profile_id = doc["_id"]
        self._encoded.pop(profile_id, None)
        self._decoded[profile_id] = doc
        self._decoded.move_to_end(profile_id)
        while len(self._decoded) > self._decoded_capacity:
            older_id, older = self._decoded.popitem(last=False)
            self._encoded[older_id] = bson.encode(older)
            PROFILE_CACHE_ENCODED.inc()
        while len(self) > self._capacity:
            (self._encoded or self._decoded).popitem(last=False)

    def drop(self, profile_ids: Iterable[str]) -> None:
        for profile_id in profile_ids:
            self._decoded.pop(profile_id, None)
            self._encoded.pop(profile_id, None)


class MongoProfileStore:
    def __init__(
        self, db: AsyncDatabase[Document], cache_size: int = 0, decoded_cache_size: int = 0
    ) -> None:
        self._profiles = db.profiles
        self._links = db.identity_links
        self._markers = db.delivered_outboxes
        self._cache = ProfileCache(cache_size, decoded_cache_size)
        # Identity link keys known to be stored (a dict for its order: oldest first).
        self._linked: dict[str, None] = {}
        # Where the changes this process's writes decide are counted (see counters.py).
        self._counter_slot: int | None = None

    def count_in_slot_of(self, partitions: Iterable[int]) -> None:
        """Count from now on in the slot of the first of these user-events partitions (this
        process's assignment); without partitions, in the base document."""
        first = min(partitions, default=None)
        self._counter_slot = None if first is None else first % COUNTER_SLOTS

    async def load_profiles(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        found: dict[str, Document] = {}
        missing: list[str] = []
        for pid in profile_ids:
            cached = self._cache.take(pid)
            if cached is None:
                missing.append(pid)
            else:
                found[pid] = cached
        # Read profiles are cached when written: one left unwritten is read again next time.
        return found | await self._read(missing)

    async def _read(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        found = await find_by_ids(self._profiles, profile_ids)
        return {pid: unpacked_profile(doc) for pid, doc in found.items()}

    async def commit_profiles(self, writes: Sequence[tuple[Document, int]]) -> set[str]:
        conflicts: set[str] = set()
        # New profiles are plain inserts, which go out in bigger (cheaper) commands.
        inserts = [write for write in writes if write[1] == 0]
        replaces = [write for write in writes if write[1] != 0]
        # Each write carries a token of this call: when a guarded write matched nothing, the
        # stored document's token tells "already ours" (a retried chunk) from "another writer
        # won" (which may have written the same version number, from the same stale read).
        token = write_token(self._counter_slot)
        for profile, _expected in writes:
            profile["written_by"] = token
        # A few commands in flight at once: the next chunk is encoded and sent while the store
        # applies the last (it applies update commands one at a time anyway). New profiles go
        # first: a merge's target is inserted before its source, a replace, says it was merged.
        gate = asyncio.Semaphore(CONCURRENT_COMMANDS)

        async def commit(chunk: Sequence[tuple[Document, int]]) -> set[str]:
            async with gate:
                return await self._commit_chunk(chunk, token)

        for group, size in ((inserts, INSERT_CHUNK), (replaces, GUARDED_REPLACE_CHUNK)):
            chunks = [group[start : start + size] for start in range(0, len(group), size)]
            for chunk_conflicts in await all_at_once(commit(chunk) for chunk in chunks):
                conflicts |= chunk_conflicts
        for profile, _expected in writes:
            if profile["_id"] not in conflicts:
                self._cache.put(profile)
        # A conflict means the cached copy (if any) is stale: the retry reads the store.
        self._cache.drop(conflicts)
        PROFILE_CACHE.labels("decoded").set(self._cache.decoded_entries)
        PROFILE_CACHE.labels("encoded").set(len(self._cache) - self._cache.decoded_entries)
        return conflicts

    async def _commit_chunk(self, writes: Sequence[tuple[Document, int]], token: str) -> set[str]:
        ops: list[InsertOne[Document] | ReplaceOne[Document]] = []
        for profile, expected in writes:
            stored = packed_profile(profile)
            if expected == 0:
                ops.append(InsertOne(stored))
            else:
                ops.append(ReplaceOne({"_id": profile["_id"], "version": expected}, stored))
        conflicts: set[str] = set()
        try:
            result = await self._profiles.bulk_write(ops, ordered=False)
            matched = result.matched_count + result.inserted_count
        except (BulkWriteError, KeyError):
            # A lost race (duplicate insert); FerretDB's reply to it is unreadable, so apply the
            # chunk one by one: a replace already applied matches nothing and is told apart
            # from a real conflict by the token check below.
            matched = 0
            for op, (profile, _expected) in zip(ops, writes, strict=True):
                try:
                    matched += await apply_one(self._profiles, op)
                except DuplicateKeyError:
                    conflicts.add(profile["_id"])
        if matched + len(conflicts) < len(writes):
            # A guarded replace that matched nothing lost a race: find which ones.
            stored = await self._read([p["_id"] for p, _ in writes])
            for profile, _expected in writes:
                current = stored.get(profile["_id"])
                if current is None or current.get("written_by") != token:
                    conflicts.add(profile["_id"])
        return conflicts

    async def clear_outboxes(
        self, delivered: Sequence[tuple[str, int, datetime | None]]
    ) -> set[tuple[str, int]]:
        """Clear delivered outboxes, each guarded by the version it was written at; returns the
        (profile, version) of those cleared (a profile written since keeps its outbox)."""
        if not delivered:
            return set()
        # Cached copies still hold the outbox: drop them (the next read takes the store's).
        self._cache.drop(pid for pid, _version, _due_at in delivered)
        await bulk_write_chunked(
            self._profiles,
            [
                # A new version, so a copy of the profile read (or cached) with its outbox before
                # the clear cannot be written back over it, replaying the delivered outbox.
                UpdateOne(
                    {"_id": pid, "version": version},
                    {
                        "$set": {"outbox": [], "due_at": due_at},
                        "$unset": {"carried_from": ""},
                        "$inc": {"version": 1},
                    },
                )
                for pid, version, due_at in delivered
            ],
        )
        # Cleared are those now one version on with an empty outbox (the writes do not tell,
        # FerretDB's bulk answer lacks the detail): the marker of any other must stay, as a
        # process that took that outbox over may still look for it.
        stored = await find_by_ids(
            self._profiles, [pid for pid, _v, _d in delivered], {"version": 1, "outbox": 1}
        )
        return {
            (pid, version)
            for pid, version, _due_at in delivered
            if stored.get(pid, {}).get("version") == version + 1 and not stored[pid].get("outbox")
        }

    async def mark_delivered(self, writes: Collection[str]) -> None:
        # One marker per write, not per outbox: a batch's write marks all its outboxes at once.
        if writes:
            at = datetime.now(UTC)
            await bulk_write_chunked(
                self._markers,
                [InsertOne({"_id": token, "at": at}) for token in sorted(writes)],
                ignore_duplicates=True,
            )

    async def marked_writes(
        self, writes: Collection[tuple[str, int, str | None]]
    ) -> set[tuple[str, int]]:
        names: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for pid, version, token in writes:
            for name in _write_marker_names(pid, version, token):
                names[name].add((pid, version))
        marked = await find_by_ids(self._markers, sorted(names), {"_id": 1})
        return {write for name in marked for write in names[name]}

    async def outboxes_now(self, profile_ids: Sequence[str]) -> dict[str, Document]:
        return await find_by_ids(
            self._profiles,
            profile_ids,
            {"version": 1, "written_by": 1, "carried_from": 1, "outbox": 1},
        )

    async def drop_unreferenced_markers(self, older_than: timedelta) -> int:
        """The old markers first, then one pass over the profiles holding an outbox, then
        deletes that give way: each command is followed by a pause as long as it took (FerretDB
        runs write commands one at a time, and back-to-back deletes held batches up)."""
        made_before = datetime.now(UTC) - older_than
        # Markers of older versions have no time: they go as soon as no outbox needs them.
        stale = {
            doc["_id"]
            async for doc in self._markers.find({}, {"at": 1})
            if doc.get("at") is None or doc["at"] < made_before
        }
        if not stale:
            return 0
        # An old marker no outbox names now is needed by nobody: a write carries an outbox on
        # only while no marker says it went out, so no new outbox comes to name an old marker.
        cursor = self._profiles.find(
            {"outbox.0": {"$exists": True}},
            {"version": 1, "written_by": 1, "carried_from": 1, "outbox": 1},
        )
        async for doc in cursor:
            stale -= _marker_names(doc)
        unneeded = sorted(stale)
        for start in range(0, len(unneeded), ID_LOOKUP_CHUNK):
            began = time.monotonic()
            await delete_by_ids(self._markers, unneeded[start : start + ID_LOOKUP_CHUNK])
            if start + ID_LOOKUP_CHUNK < len(unneeded):
                await asyncio.sleep(time.monotonic() - began)
        return len(unneeded)

    async def profile_ids_to_sweep(self, now: datetime, limit: int) -> list[str]:
        # A profile with an undelivered outbox is due too (see OUTBOX_GRACE): one indexed query.
        cursor = self._profiles.find({"due_at": {"$lte": now}}, {"_id": 1}).limit(limit)
        return [doc["_id"] async for doc in cursor]

    async def matching_profile_ids(
        self,
        project_id: str,
        audience_id: str,
        rule: Group | None,
        now: datetime,
        chunk: int,
        counted_events: Sequence[str] = (),
    ) -> AsyncIterator[list[str]]:
        # A list audience (no rule) matches the profiles carrying its list.
        matches = compile_mongo_filter(rule, now) if rule is not None else {"lists": audience_id}
        if counted_events:
            matches = {
                "$or": [
                    matches,
                    *({f"events.{encode_key(name)}.count": {"$gte": 1}} for name in counted_events),
                ]
            }
        # One cursor read in batches, not a sorted page per chunk: without an index on the
        # rule's fields every page would be a full scan (and sort) of the profiles.
        cursor = self._profiles.find(
            {"$and": [{"project_id": project_id}, matches]}, {"_id": 1}, batch_size=chunk
        )
        ids: list[str] = []
        async for doc in cursor:
            ids.append(doc["_id"])
            if len(ids) == chunk:
                yield ids
                ids = []
        if ids:
            yield ids

    async def count_profiles(self, project_id: str) -> int:
        return await self._profiles.count_documents({"project_id": project_id})

    async def save_identity_links(self, links: Sequence[Document]) -> None:
        if not links:
            return
        # The first user linked to a key keeps it (as the sync service's own links do). Most
        # identifies repeat keys already linked: read those by _id and insert only the new ones
        # (an insert is far cheaper than an upsert on FerretDB); two processes inserting one key
        # at once leave a duplicate key error that means just that.
        # Links are never removed, so a key this process saw stored is not asked about again.
        unique = {link["_id"]: link for link in links if link["_id"] not in self._linked}
        if not unique:
            return
        known = await find_by_ids(self._links, sorted(unique), {"_id": 1})
        fresh = [InsertOne(link) for key, link in unique.items() if key not in known]
        if fresh:
            await bulk_write_chunked(self._links, fresh, ignore_duplicates=True)
        self._linked.update(dict.fromkeys(unique))
        while len(self._linked) > LINKED_KEPT:  # oldest first
            del self._linked[next(iter(self._linked))]


class MongoMembershipStore:
    """Counts, history and the members of audiences. A membership is held by its profile
    (`audiences`, with the time each was joined in `joined_at`), written with the profile's version
    guard in the same write as the decision: there is no second copy to drift or reorder."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._profiles = db.profiles
        self._markers = db.delivered_outboxes
        self._old_memberships = db.memberships
        self._state = db.audience_state
        self._counts = db.audience_counts
        self._history = db.audience_history
        # Counter documents (by `_id`) as this process last wrote or read them. Every write is
        # guarded by `count_version`, so a copy another process has moved on since only costs a
        # re-read.
        self._counters: dict[str, Document] = {}
        # Per counter document, tokens of changes this process settled, oldest first, with when.
        self._settled: dict[str, deque[tuple[float, set[str]]]] = defaultdict(deque)

    def settle(
        self, changes: Sequence[MembershipChanged], provenance: Provenance = NO_PROVENANCE
    ) -> None:
        """The changes' outboxes are marked delivered: their counters may forget their tokens
        (at this process's next write of each, once SETTLE_GRACE_S has passed)."""
        now = time.monotonic()
        tokens: dict[str, set[str]] = defaultdict(set)
        for change in changes:
            tokens[counted_in(change, provenance)].add(recorded_token(change, provenance))
        for key, settled in tokens.items():
            self._settled[key].append((now, settled))
        for key in list(self._settled):
            entries = self._settled[key]
            while entries and entries[0][0] < now - SETTLED_REMEMBERED_S:
                entries.popleft()  # written out by nobody: the counter's cap drops them
            if not entries:
                del self._settled[key]

    def _forgettable(self, key: str, cutoff: float) -> tuple[int, set[str]]:
        """How many of a counter's settled entries are past their grace, and their tokens."""
        entries = self._settled.get(key, ())
        ready = 0
        tokens: set[str] = set()
        for at, settled in entries:
            if at > cutoff:
                break
            ready += 1
            tokens |= settled
        return ready, tokens

    def _written_out(self, key: str, ready: int) -> None:
        """A counter's first `ready` settled entries went with a landed write: forget them."""
        entries = self._settled.get(key)
        if entries is None:
            return
        for _ in range(min(ready, len(entries))):
            entries.popleft()
        if not entries:
            del self._settled[key]

    async def count_changes(
        self,
        changes: Sequence[MembershipChanged],
        provenance: Provenance = NO_PROVENANCE,
        issue_by: float = float("inf"),
    ) -> None:
        """Move each audience's count and running totals once per change, even when replayed.

        Each change is counted in one document of its audience's counters (`audience_counts`, see
        counters.py and counted_in): the slot its deciding write names, so concurrent processes
        write documents of their own. Each document is written whole once per batch: it keeps
        tokens of the changes it applied until they are settled (see settle,
        SETTLE_GRACE_S and Provenance), so a replayed change is recognised, and each write is
        guarded by `count_version`, so it lands only if no other writer moved the counter since
        this process read it (else that document is read again and tried again). A
        whole-document replace guarded by version is one statement on FerretDB as we build it,
        and the batch's counters go out in one command. No write is issued after `issue_by`
        (time.monotonic()).
        """
        pending: dict[str, list[MembershipChanged]] = defaultdict(list)
        for change in changes:
            pending[counted_in(change, provenance)].append(change)
        for attempt in range(COUNT_ROUNDS):
            if attempt:
                await asyncio.sleep(random.uniform(0, COUNT_BACKOFF_S * attempt))
            await self._read_counters({key: items[0].audience_id for key, items in pending.items()})
            if (late_by := time.monotonic() - issue_by) > 0:
                raise LateCount(late_by)
            cutoff = time.monotonic() - SETTLE_GRACE_S
            forgettable = {key: self._forgettable(key, cutoff) for key in pending}
            writes = {
                key: counted
                for key, items in pending.items()
                if (
                    counted := _counted(self._counters[key], items, forgettable[key][1], provenance)
                )
                is not None
            }
            landed = await self._write_counters(
                writes, {key: pending[key][0].audience_id for key in writes}
            )
            for key in landed:
                self._written_out(key, forgettable[key][0])
            pending = {
                key: items for key, items in pending.items() if key in writes and key not in landed
            }
            if not pending:
                return
        raise CountConflict(sorted(pending))

    async def _read_counters(self, audiences: Mapping[str, str], fresh: bool = False) -> None:
        """Load counter documents (`_id` → its audience) into memory, unless held already (or
        `fresh`). One not stored is created; so is its audience's base document, from the counts
        an older version kept in `audience_state` if there are any: readers add up the slots
        and the base, and the base must hold those before any slot counts."""
        keys = [key for key in audiences if fresh or key not in self._counters]
        if not keys:
            return
        found = await find_by_ids(self._counts, keys)
        missing = [key for key in keys if key not in found]
        if missing:
            bases = sorted({audiences[key] for key in missing})
            found_bases = await find_by_ids(self._counts, [b for b in bases if b not in missing])
            # Bases first: a slot created without its base (a failure in between) would hide
            # the counts `audience_state` holds from readers for good.
            create_bases = [b for b in bases if b not in found_bases]
            to_create = [*create_bases, *(key for key in missing if key not in create_bases)]
            older = await find_by_ids(
                self._state, bases, {"applied": 1, **dict.fromkeys(COUNT_FIELDS, 1)}
            )
            for key in to_create:
                seed = _settling(
                    {
                        "_id": key,
                        **{name: older.get(key, {}).get(name, 0) for name in COUNT_FIELDS},
                        "applied": " ".join(applied_tokens(older.get(key))),
                        "count_version": 0,
                    },
                    time.time(),
                )
                with contextlib.suppress(DuplicateKeyError):  # another process created it
                    await self._counts.insert_one(seed)
            found |= await find_by_ids(self._counts, missing)
        self._counters.update(found)

    async def _write_counters(
        self, writes: Mapping[str, Document], audiences: Mapping[str, str]
    ) -> set[str]:
        """Guarded replaces of counter documents; returns the `_id`s whose write landed."""
        if not writes:
            return set()
        ops = [
            ReplaceOne({"_id": key, "count_version": doc["count_version"] - 1}, doc)
            for key, doc in writes.items()
        ]
        try:
            result = await self._counts.bulk_write(ops, ordered=False)
            if result.matched_count == len(ops):
                self._counters.update(writes)
                return set(writes)
        except (BulkWriteError, KeyError):
            pass  # told apart below, by what the store holds now
        await self._read_counters(audiences, fresh=True)
        return {
            key
            for key, doc in writes.items()
            if self._counters[key].get("count_version") == doc["count_version"]
            and self._counters[key].get("applied") == doc["applied"]
        }

    async def member_profile_ids(self, audience_id: str) -> list[str]:
        cursor = self._profiles.find({"audiences": audience_id}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def member_count(self, audience_id: str) -> int:
        """The incremental count as the store holds it now."""
        stored = await self._stored_counters([audience_id])
        return summed_counts([audience_id], stored)[audience_id]["member_count"]

    async def _stored_counters(self, audience_ids: Sequence[str]) -> dict[str, Document]:
        """Every counter document of these audiences as the store holds it now, by `_id`."""
        return await find_by_ids(self._counts, all_counter_ids(audience_ids))

    async def reconcile_counts(self, audience_ids: Sequence[str]) -> None:
        """Repair counts that drifted from the profiles' memberships, with one pass over the
        profiles (on FerretDB every count reads the whole collection).

        The caller holds off this process's own deliveries. A profile's membership is visible
        from its write, its count moves when its outbox is delivered: an audience named in an
        outbox that has no delivered marker may have a change in flight (another process between
        write and delivery, or one that died there), so it is left to the next pass. So is a
        counter that moved while the profiles were counted. A repair moves the audience's base
        document by the difference, guarded by its `count_version`, so a counter update that read
        the old base tries again.
        """
        wanted = set(audience_ids)
        before = await self._stored_counters(audience_ids)
        cursor = await self._profiles.aggregate(
            [
                {"$match": {"audiences": {"$in": sorted(wanted)}}},
                {"$unwind": "$audiences"},
                {"$group": {"_id": "$audiences", "count": {"$sum": 1}}},
            ]
        )
        counted = {doc["_id"]: doc["count"] async for doc in cursor}
        in_flight = await self._audiences_in_flight()
        after = await self._stored_counters(audience_ids)
        totals = summed_counts(audience_ids, after)

        def versions(stored: Mapping[str, Document], audience_id: str) -> list[Any]:
            return [stored.get(key, {}).get("count_version") for key in counter_ids(audience_id)]

        for audience_id in audience_ids:
            count = counted.get(audience_id, 0)
            was = totals[audience_id]["member_count"]
            if versions(before, audience_id) != versions(after, audience_id):
                continue
            if audience_id in in_flight or was == count:
                continue
            if audience_id not in after:
                # Created first (from the counts an older version kept, if any): repaired by the
                # next pass, which adds it up with the rest.
                await self._read_counters({audience_id: audience_id})
                continue
            log.warning("count.repaired", audience_id=audience_id, was=was, now=count)
            await self._counts.update_one(
                {"_id": audience_id, "count_version": after[audience_id].get("count_version")},
                {"$inc": {"member_count": count - was, "count_version": 1}},
            )
            self._counters.pop(audience_id, None)

    async def _audiences_in_flight(self, chunk: int = 1000) -> set[str]:
        """Audiences named in profile outboxes not known to be delivered (read in chunks: most
        profiles keep a delivered outbox until their next write)."""
        in_flight: set[str] = set()

        async def check(outboxes: list[Document]) -> None:
            # An outbox went out if the write that left it is marked.
            names = {
                doc["_id"]: set(
                    _write_marker_names(doc["_id"], doc.get("version", 0), doc.get("written_by"))
                )
                for doc in outboxes
            }
            wanted = sorted(set().union(*names.values()))
            marked = await find_by_ids(self._markers, wanted, {"_id": 1})
            for doc in outboxes:
                if not names[doc["_id"]] & marked.keys():
                    in_flight.update(outbox_audience(entry) for entry in doc["outbox"])

        outboxes: list[Document] = []
        cursor = self._profiles.find(
            {"outbox.0": {"$exists": True}},
            {"version": 1, "written_by": 1, "outbox": 1},
            batch_size=chunk,
        )
        async for doc in cursor:
            outboxes.append(doc)
            if len(outboxes) >= chunk:
                await check(outboxes)
                outboxes = []
        if outboxes:
            await check(outboxes)
        return in_flight

    async def adopt_membership_documents(self) -> int:
        """Move join times from the `memberships` collection older versions kept into their
        profiles' `joined` (the older map form), then drop it; returns how many profiles were
        offered them. Idempotent: a profile that has join times already (`joined`, or the
        `joined_at` list a later version writes) keeps them, and the collection goes only at the
        end."""
        if await self._old_memberships.estimated_document_count() == 0:
            return 0
        joined: dict[str, dict[str, datetime]] = defaultdict(dict)
        cursor = self._old_memberships.find({}, {"profile_id": 1, "audience_id": 1, "joined_at": 1})
        async for doc in cursor:
            joined[doc["profile_id"]][doc["audience_id"]] = doc["joined_at"]
        # Not a new version: the profile's outbox markers are keyed by it, and a guarded write
        # that races this one only loses join times older versions wrote.
        ops = [
            UpdateOne(
                {"_id": pid, "joined": {"$exists": False}, "joined_at": {"$exists": False}},
                {"$set": {"joined": times}},
            )
            for pid, times in joined.items()
        ]
        await bulk_write_chunked(self._profiles, ops)
        await self._old_memberships.drop()
        log.info("memberships.adopted", profiles=len(ops))
        return len(ops)

    async def record_history(self, audience_id: str, project_id: str, now: datetime) -> None:
        """Write this hour's size-history point: the count now, and the entries and exits since
        the last point of the previous hour (from the exactly-once running totals)."""
        counts = summed_counts([audience_id], await self._stored_counters([audience_id]))
        state = {
            **(await self._state.find_one({"_id": audience_id}, {"history_last": 1}) or {}),
            **counts[audience_id],
        }
        bucket = history_bucket(now)
        entered, exited = state.get("entered_total", 0), state.get("exited_total", 0)
        last = state.get("history_last") or {}
        if last.get("bucket") == bucket:
            base = (last.get("base_entered", 0), last.get("base_exited", 0))
        else:
            base = (last.get("entered_total", 0), last.get("exited_total", 0))
        await self._history.update_one(
            {"_id": history_point_id(audience_id, now)},
            {
                "$set": {
                    "audience_id": audience_id,
                    "project_id": project_id,
                    "bucket": bucket,
                    "at": now,
                    "count": state.get("member_count", 0),
                    "entered": entered - base[0],
                    "exited": exited - base[1],
                }
            },
            upsert=True,
        )
        await self._state.update_one(
            {"_id": audience_id},
            {
                "$set": {
                    "history_last": {
                        "bucket": bucket,
                        "base_entered": base[0],
                        "base_exited": base[1],
                        "entered_total": entered,
                        "exited_total": exited,
                    }
                }
            },
            upsert=True,
        )


class MongoAudienceCatalog:
    """Reads definitions the gateway owns; writes the evaluator's own state per audience."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._audiences = db.audiences
        self._state = db.audience_state

    async def active_audiences(self) -> list[Document]:
        return [doc async for doc in self._audiences.find({"archived": False})]

    async def audience(self, audience_id: str) -> Document | None:
        return await self._audiences.find_one({"_id": audience_id}, {"applied": 0})

    async def set_state(self, audience_id: str, fields: Document) -> None:
        await self._state.update_one({"_id": audience_id}, {"$set": fields}, upsert=True)

    async def state(self, audience_id: str) -> Document | None:
        return await self._state.find_one({"_id": audience_id}, {"applied": 0})

    async def claim_build(
        self,
        audience_id: str,
        version: int,
        owner: str,
        now: datetime,
        lease: timedelta,
        refresh_requested_at: datetime | None = None,
    ) -> bool:
        """Take the build of this rule version unless a live builder holds it or it is done.

        A refresh request rebuilds a finished version once: the first claim after the request
        moves `build_claimed_at` past it, so the other processes' claims for it match nothing.
        """
        refresh: list[Document] = []
        if refresh_requested_at is not None:
            refresh = [
                {
                    "build_version": version,
                    "status": "ready",
                    "build_claimed_at": {"$lt": refresh_requested_at},
                }
            ]
        claimable = {
            "_id": audience_id,
            "$or": [
                {"build_version": {"$exists": False}},
                {"build_version": {"$lt": version}},
                {"build_version": version, "build_owner": owner},
                {
                    "build_version": version,
                    "status": {"$ne": "ready"},
                    "build_lease_until": {"$lt": now},
                },
                *refresh,
            ],
        }
        claim = {
            "build_version": version,
            "build_owner": owner,
            "build_lease_until": now + lease,
            "build_claimed_at": now,
        }
        try:
            result = await self._state.update_one(claimable, {"$set": claim}, upsert=True)
        except DuplicateKeyError:
            return False  # the state exists and someone else holds the build
        return result.matched_count == 1 or result.upserted_id is not None
