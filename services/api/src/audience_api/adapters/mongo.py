"""MongoDB repositories of the gateway: audiences, their evaluator state, keys, organizations."""

import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from audience_shared.adapters.mongo_rules import compile_mongo_filter
from audience_shared.counters import COUNT_FIELDS, all_counter_ids, counter_ids, summed_counts
from audience_shared.profile import JOIN_TIME_FIELDS, join_time
from audience_shared.rules import Group
from audience_shared.schema import INDEXES, UNIQUE
from audience_shared.store import ensure_schema, find_by_ids

Document = dict[str, Any]

# The contact traits a member search looks in.
SEARCHED_TRAITS = ("email", "phone", "full_name", "name", "first_name", "last_name")


class MongoStore:
    """Holds the database handle and creates the indexes the gateway relies on."""

    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        self.client = client
        self.db: AsyncDatabase[Document] = client[database]

    async def ensure_schema(self) -> None:
        await ensure_schema(self.db, INDEXES, UNIQUE)


class MongoAudienceRepository:
    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def insert(self, audience: Document) -> None:
        await self._db.audiences.insert_one(audience)

    async def get(self, project_id: str, audience_id: str) -> Document | None:
        return await self._db.audiences.find_one(
            {"_id": audience_id, "project_id": project_id, "archived": False}
        )

    async def page(
        self,
        project_id: str,
        first: int,
        after: str | None,
        kind: str | None = None,
        search: str | None = None,
    ) -> list[Document]:
        query: Document = {"project_id": project_id, "archived": False}
        if after:
            query["_id"] = {"$gt": after}
        if kind is not None:
            query["kind"] = kind
        if search:
            query["name"] = {"$regex": re.escape(search), "$options": "i"}
        cursor = self._db.audiences.find(query).sort("_id", ASCENDING).limit(first)
        return [doc async for doc in cursor]

    async def imports_of(
        self, audience_ids: Sequence[str], per_audience: int
    ) -> dict[str, list[Document]]:
        """The newest CSV imports of each audience, newest first, in one read."""
        if not audience_ids:
            return {}
        found: dict[str, list[Document]] = {}
        cursor = self._db.imports.find(
            {"audience_id": {"$in": list(audience_ids)}}, {"checkpoint": 0, "errors": 0}
        ).sort("created_at", DESCENDING)
        async for doc in cursor:
            held = found.setdefault(doc["audience_id"], [])
            if len(held) < per_audience:
                held.append(doc)
        return found

    async def state(self, audience_id: str) -> Document | None:
        return (await self.states([audience_id])).get(audience_id)

    async def states(self, audience_ids: Sequence[str]) -> dict[str, Document]:
        """The evaluator's state of each audience, with its counts (kept in documents of their
        own, `audience_counts`, which a data directory from before them may lack)."""
        if not audience_ids:
            return {}
        found = await find_by_ids(self._db.audience_state, audience_ids, {"applied": 0})
        counters = await find_by_ids(
            self._db.audience_counts, all_counter_ids(found), dict.fromkeys(COUNT_FIELDS, 1)
        )
        for audience_id, counts in summed_counts(list(found), counters).items():
            if any(counter_id in counters for counter_id in counter_ids(audience_id)):
                found[audience_id].update(counts)
        return found

    async def claim_refresh(self, audience_id: str, version: int, at: datetime) -> bool:
        try:
            await self._db.audience_refreshes.insert_one(
                {"_id": f"{audience_id}|{version}", "audience_id": audience_id, "requested_at": at}
            )
        except DuplicateKeyError:
            return False
        return True

    async def history_points(self, point_ids: Sequence[str]) -> list[Document]:
        # By _id in bounded chunks: the one lookup FerretDB serves from an index.
        points = list((await find_by_ids(self._db.audience_history, point_ids)).values())
        return sorted(points, key=lambda doc: doc["at"])

    async def rules_of_project(self, project_id: str) -> list[Document]:
        """Id, name and rule of every live audience of a project (for references and cycles)."""
        cursor = self._db.audiences.find(
            {"project_id": project_id, "archived": False}, {"name": 1, "rule": 1}
        )
        return [doc async for doc in cursor]

    async def update(self, audience_id: str, expected_version: int, fields: Document) -> bool:
        """Version-guarded update: a concurrent edit makes this one fail rather than interleave."""
        result = await self._db.audiences.update_one(
            {"_id": audience_id, "rule_version": expected_version, "archived": False},
            {"$set": fields},
        )
        return result.modified_count == 1

    async def members(
        self, audience_id: str, first: int, after: str | None, search: str | None
    ) -> list[Document]:
        """Members in user_id order with their traits and join time, optionally filtered by
        search. A membership is held by its profile (`audiences`, with the join times)."""
        query: Document = {"audiences": audience_id}
        if after is not None:
            query["user_id"] = {"$gt": after}
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            query["$or"] = [{f"traits.{name}": pattern} for name in SEARCHED_TRAITS]
        cursor = (
            self._db.profiles.find(query, {"user_id": 1, "traits": 1, **JOIN_TIME_FIELDS})
            .sort("user_id", ASCENDING)
            .limit(first)
        )
        return [
            {
                "user_id": doc["user_id"],
                "traits": doc.get("traits") or {},
                "joined_at": join_time(doc, audience_id),
            }
            async for doc in cursor
        ]


class MongoProfileReader:
    """Read-only access to profiles: previews by the store's own query engine, user lookups."""

    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def preview(
        self, project_id: str, rule: Group, now: datetime, sample: int
    ) -> tuple[int, list[str]]:
        query = {"$and": [{"project_id": project_id}, compile_mongo_filter(rule, now)]}
        count = await self._db.profiles.count_documents(query)
        cursor = self._db.profiles.find(query, {"user_id": 1}).sort("_id", ASCENDING).limit(sample)
        return count, [doc["user_id"] async for doc in cursor]

    async def count(self, project_id: str, rule: Group, now: datetime) -> int:
        query = {"$and": [{"project_id": project_id}, compile_mongo_filter(rule, now)]}
        return await self._db.profiles.count_documents(query)

    async def matching_ids(self, project_id: str, rule: Group, now: datetime) -> set[str]:
        query = {"$and": [{"project_id": project_id}, compile_mongo_filter(rule, now)]}
        return {doc["user_id"] async for doc in self._db.profiles.find(query, {"user_id": 1})}

    async def member_ids(self, audience_id: str) -> set[str]:
        cursor = self._db.profiles.find({"audiences": audience_id}, {"user_id": 1})
        return {doc["user_id"] async for doc in cursor}

    async def profile(self, project_id: str, user_id: str) -> Document | None:
        return await self._db.profiles.find_one({"_id": f"{project_id}/{user_id}"})


class MongoKeyRepository:
    """API keys by hash. Every request authenticates, so a lookup is remembered for
    KEY_CACHE_TTL_S: a key revoked through this gateway stops at once, through another gateway
    process within that time."""

    KEY_CACHE_TTL_S = 2.0

    def __init__(self, store: MongoStore) -> None:
        self._db = store.db
        self._cache: dict[str, tuple[float, Document | None]] = {}

    async def find_by_hash(self, key_hash: str) -> Document | None:
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        doc = await self._db.api_keys.find_one({"hash": key_hash})
        if len(self._cache) > 10_000:  # bounded: presented keys are attacker-chosen
            self._cache.clear()
        self._cache[key_hash] = (time.monotonic() + self.KEY_CACHE_TTL_S, doc)
        return doc

    async def upsert(self, key: Document) -> None:
        await self._db.api_keys.replace_one({"_id": key["_id"]}, key, upsert=True)
        self.forget_cached()

    def forget_cached(self) -> None:
        self._cache.clear()


class MongoTenancyRepository:
    """Organizations, projects and the key listing of an organization."""

    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def ensure_organization(self, org_id: str, name: str) -> None:
        await self._db.organizations.update_one(
            {"_id": org_id}, {"$setOnInsert": {"name": name}}, upsert=True
        )

    async def ensure_project(self, project: Document) -> None:
        fields = {k: v for k, v in project.items() if k != "_id"}
        await self._db.projects.update_one(
            {"_id": project["_id"]}, {"$setOnInsert": fields}, upsert=True
        )

    async def insert_project(self, project: Document) -> None:
        await self._db.projects.insert_one(project)

    async def project(self, project_id: str) -> Document | None:
        return await self._db.projects.find_one({"_id": project_id})

    async def projects(self, organization_id: str) -> list[Document]:
        cursor = self._db.projects.find({"organization_id": organization_id}).sort("_id", ASCENDING)
        return [doc async for doc in cursor]

    async def keys(self, organization_id: str, project_id: str | None) -> list[Document]:
        query: Document = {"organization_id": organization_id}
        if project_id is not None:
            query["project_id"] = project_id
        cursor = self._db.api_keys.find(query, {"hash": 0}).sort("_id", ASCENDING)
        return [doc async for doc in cursor]

    async def revoke_key(self, key_id: str, at: datetime) -> None:
        await self._db.api_keys.update_one({"_id": key_id}, {"$set": {"revoked_at": at}})
