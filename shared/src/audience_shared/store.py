"""MongoDB plumbing shared by the services: the client, DDL only when missing, chunked bulks."""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Histogram
from pymongo import AsyncMongoClient, DeleteOne, InsertOne, ReplaceOne, UpdateOne, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from audience_shared.tasks import all_at_once

Document = dict[str, Any]
IndexKeys = Sequence[tuple[str, int]]

# FerretDB 1.24 (SQLite) keeps each matched update's query open until the whole command ends and
# needs a second pooled connection to write; past ~100 matched updates in one command, or many
# concurrent ones, its 100-connection pool deadlocks. Small commands never reach that.
BULK_CHUNK = 25

# Replaces guarded by a version (`{_id, version}`) are spared that limit: FerretDB as we build it
# (store.sh; an unpatched one is not supported: its updates are not atomic either, see
# docs/operations.md)
# writes them without reading the stored documents, so they hold no query open
# (deploy/local/ferretdb/guarded-replace.patch), and a command's are written in one transaction
# (batched-replaces.patch). Fewer, bigger commands cost the store less per profile: under the
# evaluator benchmark with 45 % of the cores stolen, 0.40 ms of write stage per event against
# 0.44 to 0.46 at 25, and the workload p99 283 and 476 ms against 545 to 756.
GUARDED_REPLACE_CHUNK = 100

# Inserts hold no query open, and FerretDB writes a command's inserts in one statement: an insert
# costs a small fraction of an update there, and bigger commands cost less per document.
INSERT_CHUNK = 250

# Bulk commands of one call in flight at once.
CONCURRENT_COMMANDS = 4
# Ids per `$in` lookup: FerretDB (as we build it) answers up to 1,000 from the _id index, and a
# longer `$in` by decoding the whole collection.
ID_LOOKUP_CHUNK = 500


def chunk_size(ops: Sequence[Any]) -> int:
    """How many of these operations one command may carry (see BULK_CHUNK, INSERT_CHUNK)."""
    return INSERT_CHUNK if all(isinstance(op, InsertOne) for op in ops) else BULK_CHUNK


STORE_COMMAND_SECONDS = Histogram(
    "audiences_store_command_seconds",
    "Store commands by name and collection: where the store's time goes",
    ["command", "collection"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class CommandTimer(monitoring.CommandListener):
    """Times every store command into STORE_COMMAND_SECONDS."""

    def __init__(self) -> None:
        # request id → collection: the reply events do not carry the command.
        self._collections: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = "collection" if event.command_name == "getMore" else event.command_name
        target = event.command.get(name)
        self._collections[event.request_id] = target if isinstance(target, str) else ""

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._observe(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._observe(event)

    def _observe(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent
    ) -> None:
        collection = self._collections.pop(event.request_id, "")
        STORE_COMMAND_SECONDS.labels(event.command_name, collection).observe(
            event.duration_micros / 1e6
        )


def connect_store(url: str) -> AsyncMongoClient[Document]:
    """An async client with aware UTC datetimes and short timeouts, so outages surface fast."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        appname="audiences",
        event_listeners=[CommandTimer()],
    )


async def ping(client: AsyncMongoClient[Document]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True


async def is_ferretdb(db: AsyncDatabase[Document]) -> bool:
    info = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


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
    # FerretDB 1.24 (SQLite) answers every query but an _id lookup by reading the collection, so
    # a non-unique index there only costs each write (docs/operations.md, "FerretDB").
    wanted_indexes = {} if await is_ferretdb(db) else indexes
    for name in sorted(set(indexes) | set(unique)):
        if name not in existing:
            await db.create_collection(name)
        have = {
            tuple((key, int(direction)) for key, direction in info["key"])
            for info in (await db[name].index_information()).values()
        }
        for keys, is_unique in [(k, False) for k in wanted_indexes.get(name, ())] + [
            (k, True) for k in unique.get(name, ())
        ]:
            if tuple(keys) not in have:
                await db[name].create_index(list(keys), unique=is_unique)


async def bulk_write_chunked(
    collection: AsyncCollection[Document], ops: Sequence[Any], ignore_duplicates: bool = False
) -> None:
    """Unordered bulk writes in small commands (see `chunk_size`).

    A chunk that reports a write error is re-applied one operation at a time (every caller's
    operations are idempotent): FerretDB answers such a bulk without `nModified`, which pymongo
    cannot merge (KeyError), so its per-operation errors are unreadable. With
    `ignore_duplicates`, an operation refused for a duplicate key counts as already done.
    """
    size = chunk_size(ops)
    # Unordered writes commute, so a few commands may be in flight at once (the round trips
    # overlap; FerretDB applies update commands one at a time anyway).
    gate = asyncio.Semaphore(CONCURRENT_COMMANDS)

    async def write(chunk: list[Any]) -> None:
        async with gate:
            try:
                await collection.bulk_write(chunk, ordered=False)
            except (BulkWriteError, KeyError):
                for op in chunk:
                    try:
                        await apply_one(collection, op)
                    except DuplicateKeyError:
                        if not ignore_duplicates:
                            raise

    # The first failure cancels the commands still waiting, as a batch's own writes do.
    await all_at_once(write(list(ops[start : start + size])) for start in range(0, len(ops), size))


async def apply_one(collection: AsyncCollection[Document], op: Any) -> int:
    """One bulk operation as its own command; returns how many documents it matched or wrote."""
    # pymongo's operation classes keep their arguments in these attributes.
    if isinstance(op, InsertOne):
        await collection.insert_one(op._doc)
        return 1
    if isinstance(op, ReplaceOne):
        result = await collection.replace_one(op._filter, op._doc, upsert=bool(op._upsert))
        return result.matched_count + (1 if result.upserted_id is not None else 0)
    if isinstance(op, UpdateOne):
        result = await collection.update_one(op._filter, op._doc, upsert=bool(op._upsert))
        return result.matched_count + (1 if result.upserted_id is not None else 0)
    if isinstance(op, DeleteOne):
        return (await collection.delete_one(op._filter)).deleted_count
    raise TypeError(f"unsupported bulk operation {op!r}")


async def find_by_ids(
    collection: AsyncCollection[Document],
    ids: Sequence[str],
    projection: Document | None = None,
) -> dict[str, Document]:
    """The documents with these ids, by id, read in `$in` chunks of ID_LOOKUP_CHUNK."""
    found: dict[str, Document] = {}
    for start in range(0, len(ids), ID_LOOKUP_CHUNK):
        chunk = list(ids[start : start + ID_LOOKUP_CHUNK])
        cursor = collection.find({"_id": {"$in": chunk}}, projection)
        found |= {doc["_id"]: doc async for doc in cursor}
    return found


async def delete_by_ids(collection: AsyncCollection[Document], ids: Sequence[str]) -> None:
    """Delete the documents with these ids, one `$in` delete per ID_LOOKUP_CHUNK (a third of the
    cost of as many single deletes on FerretDB)."""
    for start in range(0, len(ids), ID_LOOKUP_CHUNK):
        await collection.delete_many({"_id": {"$in": list(ids[start : start + ID_LOOKUP_CHUNK])}})
