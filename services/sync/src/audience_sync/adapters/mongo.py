"""MongoDB adapters of the sync service: work records, list members, identities, schedules."""

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from audience_shared.identity import link_id
from audience_shared.profile import JOIN_TIME_FIELDS, join_time
from audience_shared.store import bulk_write_chunked

Document = dict[str, Any]
DUPLICATE_KEY = 11000

# Work kinds and the collections holding their records (the api reads the same ones).
JOB_COLLECTIONS = {
    "sync": "sync_runs",
    "import": "imports",
    "export": "exports",
    "dataset_import": "dataset_imports",
}
# A claim whose record is still unmarked this long after it was won belongs to a dead worker.
STALE_CLAIM_S = 60.0
# `_id: {$in: [...]}` lists stay under FerretDB's limit for using the `_id` index (1,000).
ID_BATCH = 500


class LeaseLost(Exception):
    """Another worker took this record over (our lease lapsed); stop working on it."""


class MongoJobStore:
    """Work records claimed with a lease: a worker that dies loses its claim when it lapses."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def claim_next(
        self, kind: str, owner: str, now: datetime, lease_s: float
    ) -> Document | None:
        collection = self._db[JOB_COLLECTIONS[kind]]
        claimable: Document = {
            "$or": [{"status": "queued"}, {"status": "running", "lease_until": {"$lt": now}}]
        }
        cursor = collection.find(claimable, {"attempts": 1}).sort("created_at", ASCENDING).limit(5)
        for candidate in [doc async for doc in cursor]:
            attempt = candidate.get("attempts", 0)
            # The claim is the insert of the attempt's claim document: the store's unique `_id`
            # lets exactly one worker win it. A guarded update is not enough: FerretDB matches
            # the guard and writes the document in two steps, so two workers could both "win".
            claim_id = f"{kind}|{candidate['_id']}|{attempt}"
            try:
                await self._db.job_claims.insert_one({"_id": claim_id, "owner": owner, "at": now})
            except DuplicateKeyError:
                await self._skip_stale_claim(collection, candidate["_id"], attempt, claim_id, now)
                continue
            await collection.update_one(
                {"_id": candidate["_id"]},
                {
                    "$set": {
                        "status": "running",
                        "owner": owner,
                        "lease_until": now + timedelta(seconds=lease_s),
                        "attempts": attempt + 1,
                        "updated_at": now,
                    }
                },
            )
            return await collection.find_one({"_id": candidate["_id"]})
        return None

    async def _skip_stale_claim(
        self,
        collection: AsyncCollection[Document],
        record_id: str,
        attempt: int,
        claim_id: str,
        now: datetime,
    ) -> None:
        """A worker that won a claim but died before marking the record leaves it claimable at
        the same attempt forever; past the claim's age limit, move the record to the next one."""
        claim = await self._db.job_claims.find_one({"_id": claim_id})
        if claim is not None and claim["at"] < now - timedelta(seconds=STALE_CLAIM_S):
            await collection.update_one(
                {"_id": record_id, "attempts": attempt}, {"$set": {"attempts": attempt + 1}}
            )

    async def get(self, kind: str, record_id: str) -> Document | None:
        return await self._db[JOB_COLLECTIONS[kind]].find_one({"_id": record_id})

    async def update_owned(
        self, kind: str, record_id: str, owner: str, fields: Document, inc: Document | None = None
    ) -> None:
        change: Document = {"$set": fields} if fields else {}
        if inc:
            change["$inc"] = inc
        result = await self._db[JOB_COLLECTIONS[kind]].update_one(
            {"_id": record_id, "owner": owner, "status": "running"}, change
        )
        if result.matched_count == 0:
            raise LeaseLost(record_id)

    async def fail_unclaimed(self, kind: str, record_id: str, fields: Document) -> None:
        await self._db[JOB_COLLECTIONS[kind]].update_one(
            {"_id": record_id, "status": {"$in": ["queued", "running"]}}, {"$set": fields}
        )


class MongoSyncStore:
    """Audiences and integrations (read), list members and sync state (the service's own)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def audience(self, audience_id: str) -> Document | None:
        return await self._db.audiences.find_one({"_id": audience_id})

    async def klaviyo_key(self, project_id: str) -> bytes | None:
        doc = await self._db.integrations.find_one({"_id": f"{project_id}/klaviyo"})
        return bytes(doc["api_key_encrypted"]) if doc else None

    async def sync_state(self, audience_id: str) -> Document | None:
        return await self._db.sync_states.find_one({"_id": audience_id})

    async def list_members(self, audience_id: str, user_ids: Sequence[str]) -> dict[str, Document]:
        ids = [f"{audience_id}|{user_id}" for user_id in set(user_ids)]
        cursor = self._db.list_members.find({"_id": {"$in": ids}})
        return {doc["user_id"]: doc async for doc in cursor}

    async def mark_seen(
        self, audience_id: str, project_id: str, run_id: str, seen: Sequence[Document]
    ) -> None:
        if not seen:
            return
        await bulk_write_chunked(
            self._db.list_members,
            [
                UpdateOne(
                    {"_id": f"{audience_id}|{item['user_id']}"},
                    {
                        "$set": {
                            "audience_id": audience_id,
                            "project_id": project_id,
                            "user_id": item["user_id"],
                            "member": True,
                            "last_seen_run": run_id,
                            "traits_digest": item["traits_digest"],
                            "source_id": item["source_id"],
                            "joined_group_at": item["joined_group_at"],
                        }
                    },
                    upsert=True,
                )
                for item in seen
            ],
        )

    async def unseen_members(self, audience_id: str, run_id: str, limit: int) -> list[str]:
        cursor = self._db.list_members.find(
            {"audience_id": audience_id, "member": True, "last_seen_run": {"$ne": run_id}},
            {"user_id": 1},
        ).limit(limit)
        return [doc["user_id"] async for doc in cursor]

    async def mark_left(self, audience_id: str, user_ids: Sequence[str], run_id: str) -> None:
        await self._db.list_members.update_many(
            {"_id": {"$in": [f"{audience_id}|{user_id}" for user_id in user_ids]}},
            {"$set": {"member": False, "left_run": run_id}},
        )

    async def finish_sync(
        self, audience_id: str, run_id: str, succeeded: bool, fields: Document
    ) -> None:
        now = datetime.now(UTC)
        update: Document = {"last_run_id": run_id, "last_run_at": now, "last_ok": succeeded}
        if succeeded:
            update["last_success_at"] = now
            if fields.get("watermark") is not None:
                update["watermark"] = fields["watermark"]
            if fields.get("mode") == "full":
                update["last_full_at"] = now
        await self._db.sync_states.update_one({"_id": audience_id}, {"$set": update}, upsert=True)

    async def release_sync_lock(self, audience_id: str, run_id: str) -> None:
        # Only if this run holds it: a later run may have taken over a lock we left.
        await self._db.sync_states.update_one(
            {"_id": audience_id, "active_run_id": run_id}, {"$set": {"active_run_id": None}}
        )


class MongoIdentityStore:
    """Identity links (`_id` = "<project>|<key>") and which users have a profile."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def find_links(self, project_id: str, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = [link_id(project_id, key) for key in keys]
        # Short `$in` lists: FerretDB serves `_id: {$in}` by index only up to 1,000 values.
        for start in range(0, len(ids), ID_BATCH):
            cursor = self._db.identity_links.find({"_id": {"$in": ids[start : start + ID_BATCH]}})
            found.update({doc["_id"].split("|", 1)[1]: doc["user_id"] async for doc in cursor})
        return found

    async def save_links(self, project_id: str, links: dict[str, str]) -> None:
        # Idempotent upserts, and a duplicate key (two workers linking one key at once) means
        # the first link stands, as intended.
        await bulk_write_chunked(
            self._db.identity_links,
            [
                UpdateOne(
                    {"_id": link_id(project_id, key)},
                    {"$setOnInsert": {"project_id": project_id, "user_id": user_id}},
                    upsert=True,
                )
                for key, user_id in links.items()
            ],
            ignore_duplicates=True,
        )

    async def existing_users(self, project_id: str, user_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = [f"{project_id}/{user_id}" for user_id in user_ids]
        for start in range(0, len(ids), ID_BATCH):
            cursor = self._db.profiles.find(
                {"_id": {"$in": ids[start : start + ID_BATCH]}}, {"user_id": 1}
            )
            found.update({str(doc["user_id"]) async for doc in cursor})
        return found


class MongoMemberSource:
    """Members of an audience as the evaluator holds them: the profiles carrying it in
    `audiences`, with their traits and the time each joined."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def count_members(self, audience_id: str) -> int:
        return await self._db.profiles.count_documents({"audiences": audience_id})

    async def member_pages(
        self, audience_id: str, after: str | None, size: int
    ) -> AsyncIterator[list[Document]]:
        query: Document = {"audiences": audience_id}
        if after is not None:
            query["user_id"] = {"$gt": after}
        # One cursor for the whole unload: on FerretDB every query of profiles by audience is a
        # scan, so a query per page would make the unload quadratic in the audience's size.
        cursor = self._db.profiles.find(
            query, {"user_id": 1, "traits": 1, **JOIN_TIME_FIELDS}, batch_size=size
        ).sort("user_id", ASCENDING)
        page: list[Document] = []
        async for doc in cursor:
            page.append(
                {
                    "user_id": doc["user_id"],
                    "joined_at": join_time(doc, audience_id),
                    "traits": doc.get("traits") or {},
                }
            )
            if len(page) >= size:
                yield page
                page = []
        if page:
            yield page


class MongoScheduleStore:
    """Scheduled audiences, slot leases (one winner per slot) and run creation under a lock."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def scheduled_audiences(self) -> list[Document]:
        cursor = self._db.audiences.find(
            {
                "archived": False,
                "$or": [
                    {"refresh_schedule": {"$in": ["daily", "weekly"]}},
                    {"kind": "synced"},
                    {"mode": "unload"},
                ],
            }
        )
        return [doc async for doc in cursor]

    async def set_next_refresh(self, audience_id: str, at: datetime | None) -> None:
        await self._db.schedules.update_one(
            {"_id": audience_id}, {"$set": {"next_refresh_at": at}}, upsert=True
        )

    async def audience_ready(self, audience_id: str, rule_version: int) -> bool:
        state = await self._db.audience_state.find_one(
            {"_id": audience_id}, {"status": 1, "rule_version": 1}
        )
        return bool(
            state and state.get("status") == "ready" and state.get("rule_version") == rule_version
        )

    async def claim_slot(self, slot_id: str, owner: str, now: datetime, ttl_s: float) -> bool:
        try:
            await self._db.schedule_leases.insert_one(
                {"_id": slot_id, "owner": owner, "claimed_at": now, "done": False}
            )
            return True
        except DuplicateKeyError:
            pass
        # Ours from an earlier tick (work not finished), or abandoned by a dead process.
        result = await self._db.schedule_leases.update_one(
            {
                "_id": slot_id,
                "done": False,
                "$or": [
                    {"owner": owner},
                    {"claimed_at": {"$lt": now - timedelta(seconds=ttl_s)}},
                ],
            },
            {"$set": {"owner": owner, "claimed_at": now}},
        )
        return result.matched_count == 1

    async def complete_slot(self, slot_id: str, outcome: str) -> None:
        await self._db.schedule_leases.update_one(
            {"_id": slot_id}, {"$set": {"done": True, "outcome": outcome}}
        )

    async def create_sync_run(self, run: Document, now: datetime) -> str | None:
        holder = await take_sync_lock(self._db, run["audience_id"], run["_id"], now)
        if holder is not None and holder != run["_id"]:
            return holder
        await self._db.sync_runs.update_one({"_id": run["_id"]}, {"$setOnInsert": run}, upsert=True)
        return None

    async def create_export(self, export: Document) -> bool:
        result = await self._db.exports.update_one(
            {"_id": export["_id"]}, {"$setOnInsert": export}, upsert=True
        )
        return result.upserted_id is not None


async def take_sync_lock(
    db: AsyncDatabase[Document], audience_id: str, run_id: str, now: datetime
) -> str | None:
    """Make `run_id` the audience's one active sync; return the holder's id if another holds it.

    A single-document upsert guarded by the current holder: atomic without transactions. A lock
    left by a run that already finished (or was never recorded) is taken over.
    """
    holder: str | None = None
    for _ in range(3):
        try:
            await db.sync_states.update_one(
                {"_id": audience_id, "$or": [{"active_run_id": None}, {"active_run_id": run_id}]},
                {"$set": {"active_run_id": run_id, "locked_at": now}},
                upsert=True,
            )
            return None
        except DuplicateKeyError:
            state = await db.sync_states.find_one({"_id": audience_id}) or {}
        holder = state.get("active_run_id")
        if holder is None:
            continue
        run = await db.sync_runs.find_one({"_id": holder}, {"status": 1})
        orphaned = run is None and state.get("locked_at", now) < now - timedelta(seconds=60)
        if orphaned or (run is not None and run.get("status") in ("completed", "failed")):
            await db.sync_states.update_one(
                {"_id": audience_id, "active_run_id": holder},
                {"$set": {"active_run_id": run_id, "locked_at": now}},
            )
            continue
        return str(holder)
    return holder or "unknown"
