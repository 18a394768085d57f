"""MongoDB adapters of the sync service: work records, list members, identities, schedules."""

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from audience_shared.store import bulk_write_chunked

Document = dict[str, Any]
DUPLICATE_KEY = 11000

# Work kinds and the collections holding their records (the api reads the same ones).
JOB_COLLECTIONS = {"sync": "sync_runs", "import": "imports", "export": "exports"}


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
            # A guarded single-document update, not findAndModify: FerretDB does not make
            # findAndModify atomic, so two workers could both "claim" one record with it.
            # `attempts` is the version the guard checks; only one claimer can match it.
            result = await collection.update_one(
                {**claimable, "_id": candidate["_id"], "attempts": candidate.get("attempts", 0)},
                {
                    "$set": {
                        "status": "running",
                        "owner": owner,
                        "lease_until": now + timedelta(seconds=lease_s),
                        "updated_at": now,
                    },
                    "$inc": {"attempts": 1},
                },
            )
            if result.modified_count == 1:
                return await collection.find_one({"_id": candidate["_id"]})
        return None

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
    """Identity keys we linked to users, and the profile lookup for the ones we did not."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def find_links(self, project_id: str, keys: Sequence[str]) -> dict[str, str]:
        ids = [f"{project_id}|{key}" for key in keys]
        cursor = self._db.identity_links.find({"_id": {"$in": ids}})
        return {doc["_id"].split("|", 1)[1]: doc["user_id"] async for doc in cursor}

    async def save_links(self, project_id: str, links: dict[str, str]) -> None:
        try:
            await bulk_write_chunked(
                self._db.identity_links,
                [
                    UpdateOne(
                        {"_id": f"{project_id}|{key}"},
                        {"$setOnInsert": {"project_id": project_id, "user_id": user_id}},
                        upsert=True,
                    )
                    for key, user_id in links.items()
                ],
            )
        except (BulkWriteError, KeyError):
            # Two workers linking one key at once: the first link stands, as intended. (FerretDB
            # answers such a bulk without `nModified`, which pymongo reports as a KeyError.)
            for key, user_id in links.items():
                with contextlib.suppress(DuplicateKeyError):
                    await self._db.identity_links.update_one(
                        {"_id": f"{project_id}|{key}"},
                        {"$setOnInsert": {"project_id": project_id, "user_id": user_id}},
                        upsert=True,
                    )

    async def find_profiles(
        self,
        project_id: str,
        external_ids: Sequence[str],
        emails: Sequence[str],
        phones: Sequence[str],
    ) -> list[Document]:
        clauses: list[Document] = []
        if external_ids:
            clauses.append({"traits.external_id": {"$in": list(external_ids)}})
            clauses.append({"_id": {"$in": [f"{project_id}/{e}" for e in external_ids]}})
        if emails:
            clauses.append({"traits.email": {"$in": list(emails)}})
        if phones:
            clauses.append({"traits.phone": {"$in": list(phones)}})
        if not clauses:
            return []
        cursor = self._db.profiles.find(
            {"project_id": project_id, "$or": clauses},
            {"user_id": 1, "traits.external_id": 1, "traits.email": 1, "traits.phone": 1},
        )
        return [doc async for doc in cursor]


class MongoMemberSource:
    """Members of an audience as the evaluator recorded them, with their profiles' traits."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    async def count_members(self, audience_id: str) -> int:
        return await self._db.memberships.count_documents({"audience_id": audience_id})

    async def members_after(
        self, audience_id: str, after: str | None, limit: int
    ) -> list[Document]:
        query: Document = {"audience_id": audience_id}
        if after is not None:
            query["user_id"] = {"$gt": after}
        cursor = self._db.memberships.find(query).sort("user_id", ASCENDING).limit(limit)
        members = [doc async for doc in cursor]
        if not members:
            return []
        profiles = {
            doc["_id"]: doc.get("traits") or {}
            async for doc in self._db.profiles.find(
                {"_id": {"$in": [m["profile_id"] for m in members]}}, {"traits": 1}
            )
        }
        return [
            {
                "user_id": m["user_id"],
                "joined_at": m.get("joined_at"),
                "traits": profiles.get(m["profile_id"], {}),
            }
            for m in members
        ]


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
