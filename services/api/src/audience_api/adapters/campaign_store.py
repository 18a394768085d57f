"""MongoDB storage of campaigns: one document per campaign, counters and exposures by `_id`."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from audience_api.adapters.mongo import MongoStore
from audience_shared.profile import encode_key
from audience_shared.store import find_by_ids

Document = dict[str, Any]


class MongoCampaignStore:
    """Every hot-path read pins `_id`: FerretDB uses no other index (docs/operations.md)."""

    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def insert_campaign(self, campaign: Document) -> None:
        await self._db.campaigns.insert_one(campaign)

    async def campaign(self, project_id: str, campaign_id: str) -> Document | None:
        return await self._db.campaigns.find_one({"_id": campaign_id, "project_id": project_id})

    async def campaigns(self, project_id: str) -> list[Document]:
        cursor = self._db.campaigns.find({"project_id": project_id}).sort("_id", ASCENDING)
        return [doc async for doc in cursor]

    async def replace_campaign(self, campaign: Document, expected_version: int) -> bool:
        result = await self._db.campaigns.replace_one(
            {"_id": campaign["_id"], "version": expected_version}, campaign
        )
        return result.modified_count == 1

    async def delete_campaign(self, project_id: str, campaign_id: str) -> bool:
        result = await self._db.campaigns.delete_one({"_id": campaign_id, "project_id": project_id})
        return result.deleted_count == 1

    async def save_experiment_refs(self, refs: Sequence[Document]) -> None:
        for ref in refs:
            await self._db.campaign_experiments.replace_one({"_id": ref["_id"]}, ref, upsert=True)

    async def delete_experiment_refs(self, ref_ids: Sequence[str]) -> None:
        if ref_ids:
            await self._db.campaign_experiments.delete_many({"_id": {"$in": list(ref_ids)}})

    async def experiment_ref(self, project_id: str, experiment_id: str) -> Document | None:
        return await self._db.campaign_experiments.find_one(
            {"_id": f"{project_id}|{experiment_id}"}
        )

    async def profile(
        self, project_id: str, user_id: str, fields: Sequence[str]
    ) -> Document | None:
        # Only what the campaign's rules read: event timestamp lists, the outbox and remembered
        # event ids can be large.
        return await self._db.profiles.find_one(
            {"_id": f"{project_id}/{user_id}"}, dict.fromkeys(fields, 1)
        )

    async def impression_counts(self, counter_ids: Sequence[str]) -> dict[str, int]:
        if not counter_ids:
            return {}
        cursor = self._db.campaign_impressions.find(
            {"_id": {"$in": list(counter_ids)}}, {"count": 1}
        )
        return {doc["_id"]: int(doc.get("count", 0)) async for doc in cursor}

    async def count_impression(self, counter_id: str, fields: Document, at: datetime) -> None:
        await self._db.campaign_impressions.update_one(
            {"_id": counter_id},
            {"$inc": {"count": 1}, "$set": {"updated_at": at}, "$setOnInsert": fields},
            upsert=True,
        )

    async def stored_resolution(self, resolution_id: str) -> Document | None:
        return await self._db.campaign_resolutions.find_one({"_id": resolution_id})

    async def save_resolution(self, resolution: Document) -> bool:
        try:
            await self._db.campaign_resolutions.insert_one(resolution)
        except DuplicateKeyError:
            return False
        return True

    async def record_exposure(self, exposure: Document) -> None:
        # $setOnInsert: the first exposure's time and variant stay, repeats change nothing.
        fields = {k: v for k, v in exposure.items() if k != "_id"}
        await self._db.experiment_exposures.update_one(
            {"_id": exposure["_id"]}, {"$setOnInsert": fields}, upsert=True
        )

    async def exposures(self, project_id: str, experiment_id: str) -> list[Document]:
        cursor = self._db.experiment_exposures.find(
            {"project_id": project_id, "experiment_id": experiment_id},
            {"user_id": 1, "variant_id": 1, "first_exposed_at": 1},
        )
        return [doc async for doc in cursor]

    async def last_event_times(
        self, project_id: str, user_ids: Sequence[str], event: str
    ) -> dict[str, datetime]:
        path = f"events.{encode_key(event)}.last_at"
        found: dict[str, datetime] = {}
        ids = [f"{project_id}/{user_id}" for user_id in user_ids]
        for doc in (await find_by_ids(self._db.profiles, ids, {"user_id": 1, path: 1})).values():
            at = doc.get("events", {}).get(encode_key(event), {}).get("last_at")
            if isinstance(at, datetime):
                found[doc["user_id"]] = at
        return found
