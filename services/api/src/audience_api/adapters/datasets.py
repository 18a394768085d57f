"""MongoDB records of datasets (`_id = f"{project_id}|{name}"`) and their CSV imports."""

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING

from audience_api.adapters.mongo import MongoStore

Document = dict[str, Any]


class MongoDatasetRecords:
    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def dataset(self, project_id: str, name: str) -> Document | None:
        return await self._db.datasets.find_one({"_id": f"{project_id}|{name}"})

    async def datasets(self, project_id: str) -> list[Document]:
        cursor = self._db.datasets.find({"project_id": project_id}).sort("_id", ASCENDING)
        return [doc async for doc in cursor]

    async def add_fields(self, project_id: str, name: str, fields: list[str]) -> None:
        now = datetime.now(UTC)
        await self._db.datasets.update_one(
            {"_id": f"{project_id}|{name}"},
            {
                "$addToSet": {"fields": {"$each": fields}},
                "$set": {"updated_at": now},
                "$setOnInsert": {"project_id": project_id, "name": name, "created_at": now},
            },
            upsert=True,
        )

    async def insert_import(self, record: Document) -> None:
        await self._db.dataset_imports.insert_one(record)

    async def import_record(self, import_id: str) -> Document | None:
        return await self._db.dataset_imports.find_one({"_id": import_id})

    async def mark_import_failed(self, import_id: str, error: Document) -> None:
        await self._db.dataset_imports.update_one(
            {"_id": import_id, "status": "queued"}, {"$set": {"status": "failed", "error": error}}
        )
