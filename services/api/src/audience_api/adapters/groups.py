"""MongoDB storage of audience groups (seed 002), their members, and segment numbers (seed 003)."""

import re
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from audience_api.adapters.mongo import MongoStore

Document = dict[str, Any]

SEARCHED_TRAITS = ("email", "phone", "full_name", "name", "first_name", "last_name")


class MongoGroupRepository:
    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def insert_group(self, group: Document) -> None:
        await self._db.audience_groups.insert_one(group)

    async def group(self, project_id: str, group_id: str) -> Document | None:
        return await self._db.audience_groups.find_one({"_id": group_id, "project_id": project_id})

    async def update_group(self, group_id: str, fields: Document) -> None:
        await self._db.audience_groups.update_one({"_id": group_id}, {"$set": fields})

    async def delete_group(self, group_id: str) -> None:
        await self._db.audience_groups.delete_one({"_id": group_id})

    async def audiences_in_group(self, project_id: str, group_id: str) -> list[Document]:
        cursor = self._db.audiences.find(
            {"project_id": project_id, "group_id": group_id, "archived": False}
        ).sort("_id", ASCENDING)
        return [doc async for doc in cursor]

    async def members(
        self,
        audience_ids: Sequence[str],
        first: int,
        after: tuple[str, str] | None,
        search: str | None,
    ) -> list[Document]:
        """Memberships of the audiences in (user_id, audience_id) order, with contact traits."""
        clauses: list[Document] = [{"audience_id": {"$in": list(audience_ids)}}]
        if after is not None:
            user_id, audience_id = after
            clauses.append(
                {
                    "$or": [
                        {"user_id": {"$gt": user_id}},
                        {"user_id": user_id, "audience_id": {"$gt": audience_id}},
                    ]
                }
            )
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            matches = self._db.profiles.find(
                {
                    "audiences": {"$in": list(audience_ids)},
                    "$or": [{f"traits.{name}": pattern} for name in SEARCHED_TRAITS],
                },
                {"user_id": 1},
            )
            clauses.append({"user_id": {"$in": [d["user_id"] async for d in matches]}})
        cursor = (
            self._db.memberships.find({"$and": clauses})
            .sort([("user_id", ASCENDING), ("audience_id", ASCENDING)])
            .limit(first)
        )
        members = [doc async for doc in cursor]
        if not members:
            return []
        profiles = {
            doc["_id"]: doc
            async for doc in self._db.profiles.find(
                {"_id": {"$in": [m["profile_id"] for m in members]}}, {"traits": 1}
            )
        }
        for member in members:
            member["traits"] = profiles.get(member["profile_id"], {}).get("traits", {})
        return members

    async def next_segment_no(self, project_id: str) -> int:
        """The project's next segment number. The counter proposes, the insert of a number's own
        document decides: a duplicate _id is atomic where a read-modify-write is not (FerretDB)."""
        while True:
            counter = await self._db.segment_numbers.find_one_and_update(
                {"_id": f"{project_id}|next"}, {"$inc": {"value": 1}}, upsert=True
            )
            number = int((counter or {}).get("value", 0)) + 1
            try:
                await self._db.segment_numbers.insert_one({"_id": f"{project_id}|{number}"})
            except DuplicateKeyError:
                continue
            return number
