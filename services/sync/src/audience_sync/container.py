"""The sync service's composition root: the only place that picks adapters."""

from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from audience_shared.store import connect_store, ping
from audience_sync.config import Settings


@dataclass
class Container:
    settings: Settings
    client: AsyncMongoClient[dict[str, Any]]

    @classmethod
    def build(cls, settings: Settings) -> "Container":
        return cls(settings=settings, client=connect_store(settings.mongo_url))

    async def stop(self) -> None:
        await self.client.close()

    async def readiness(self) -> dict[str, bool]:
        return {"store": await ping(self.client)}
