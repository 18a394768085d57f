"""MongoDB storage of audience groups (seed 002), their members, and segment numbers (seed 003)."""

import re
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from audience_api.adapters.mongo import SEARCHED_TRAITS, MongoStore
from audience_shared.profile import JOIN_TIME_FIELDS, join_times

Document = dict[str, Any]


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
        """Memberships of the audiences in (user_id, audience_id) order, with contact traits.

        A membership is held by its profile, so one profile gives a row per audience of these it
        holds; `first + 1` profiles give at least `first` rows even when the one at the cursor
        has none left."""
        wanted = sorted(audience_ids)
        query: Document = {"audiences": {"$in": wanted}}
        if after is not None:
            query["user_id"] = {"$gte": after[0]}
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            query["$or"] = [{f"traits.{name}": pattern} for name in SEARCHED_TRAITS]
        cursor = (
            self._db.profiles.find(query, {"user_id": 1, "traits": 1, **JOIN_TIME_FIELDS})
            .sort("user_id", ASCENDING)
            .limit(first + 1)
        )
        rows: list[Document] = []
        async for doc in cursor:
            held = set(doc.get("audiences") or ())
            joined = join_times(doc)
            for audience_id in wanted:
                if audience_id not in held or (
                    after is not None and (doc["user_id"], audience_id) <= after
                ):
                    continue
                rows.append(
                    {
                        "user_id": doc["user_id"],
                        "audience_id": audience_id,
                        "traits": doc.get("traits") or {},
                        "joined_at": joined.get(audience_id),
                    }
                )
        return rows[:first]

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
