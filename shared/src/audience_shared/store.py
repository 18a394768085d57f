"""MongoDB client factory: one place that decides how the services talk to the store."""

from typing import Any

from pymongo import AsyncMongoClient


def connect_store(url: str) -> AsyncMongoClient[dict[str, Any]]:
    """An async client with aware UTC datetimes and short timeouts, so outages surface fast."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        appname="audiences",
    )


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
