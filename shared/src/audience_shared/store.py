"""MongoDB plumbing shared by the services: the client, DDL only when missing, chunked bulks."""

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.results import BulkWriteResult

Document = dict[str, Any]
IndexKeys = Sequence[tuple[str, int]]

# FerretDB 1.24 (SQLite) keeps each matched update's query open until the whole command ends and
# needs a second pooled connection to write; past ~100 matched updates in one command, or many
# concurrent ones, its 100-connection pool deadlocks. Small commands never reach that.
BULK_CHUNK = 25


def connect_store(url: str) -> AsyncMongoClient[Document]:
    """An async client with aware UTC datetimes and short timeouts, so outages surface fast."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        appname="audiences",
    )


async def ping(client: AsyncMongoClient[Document]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True


async def ensure_schema(
    db: AsyncDatabase[Document],
    indexes: Mapping[str, Sequence[IndexKeys]],
    unique: Mapping[str, Sequence[IndexKeys]] | None = None,
) -> None:
    """Create missing collections and indexes, and nothing else.

    DDL while other clients write can wedge FerretDB 1.24 (its metadata lock and connection pool
    are taken in opposite orders), so a restart that finds everything in place issues none.
    """
    existing = set(await db.list_collection_names())
    unique = unique or {}
    for name in sorted(set(indexes) | set(unique)):
        if name not in existing:
            await db.create_collection(name)
        have = {
            tuple((key, int(direction)) for key, direction in info["key"])
            for info in (await db[name].index_information()).values()
        }
        for keys, is_unique in [(k, False) for k in indexes.get(name, ())] + [
            (k, True) for k in unique.get(name, ())
        ]:
            if tuple(keys) not in have:
                await db[name].create_index(list(keys), unique=is_unique)


async def bulk_write_chunked(
    collection: AsyncCollection[Document], ops: Sequence[Any]
) -> list[BulkWriteResult]:
    """Unordered bulk writes in small commands (see BULK_CHUNK); results per chunk, in order."""
    results = []
    for start in range(0, len(ops), BULK_CHUNK):
        results.append(
            await collection.bulk_write(list(ops[start : start + BULK_CHUNK]), ordered=False)
        )
    return results
