"""Adapters behind the ops dashboard: broker offsets (aiokafka), the other services' readiness
(httpx) and the run records the sync service keeps (pymongo)."""

import asyncio
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import DESCENDING

from audience_api.adapters.mongo import MongoStore
from audience_api.ops import BrokerSnapshot, BrokerUnavailable, PartitionLag, RunKind
from audience_shared.topics import PARTITIONS, Topic

Document = dict[str, Any]
COLLECTIONS: dict[RunKind, str] = {"sync": "sync_runs", "import": "imports", "export": "exports"}


def _partitions(topic: Topic) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS[topic])]


class KafkaBrokerOffsets:
    """Reads offsets with short-lived clients: a snapshot every few seconds does not justify
    holding connections (and a background task) in every gateway process."""

    def __init__(self, bootstrap: str, timeout_s: float = 5.0) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s

    async def snapshot(self, consumer_group: str) -> BrokerSnapshot:
        try:
            return await asyncio.wait_for(self._read(consumer_group), self._timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"broker offsets unavailable: {exc!r}") from exc

    async def _read(self, consumer_group: str) -> BrokerSnapshot:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            await consumer.start()
            try:
                events = _partitions(Topic.USER_EVENTS)
                changes = _partitions(Topic.MEMBERSHIP_CHANGES)
                dead = _partitions(Topic.DEAD_LETTERS)
                committed = await admin.list_consumer_group_offsets(
                    consumer_group, partitions=events
                )
                ends = await consumer.end_offsets([*events, *changes, *dead])
                # Retention may have dropped old dead letters: count what the topic still holds.
                starts = await consumer.beginning_offsets(dead)
            finally:
                await consumer.stop()
        finally:
            await admin.close()
        lag = []
        for tp in events:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag.append(PartitionLag(tp.partition, ends[tp], done))
        return BrokerSnapshot(
            lag=lag,
            events_produced=sum(ends[tp] for tp in events),
            membership_changes=sum(ends[tp] for tp in changes),
            dead_letters=sum(ends[tp] - starts[tp] for tp in dead),
        )


class HttpHealthProbe:
    """GET {base_url}/readyz of another service; any failure to answer is `unreachable`."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s

    async def readiness(self, base_url: str) -> Document:
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                response = await client.get(f"{base_url.rstrip('/')}/readyz")
        except httpx.HTTPError as exc:
            return {"status": "unreachable", "checks": {}, "error": repr(exc)}
        try:
            body = response.json()
        except ValueError:
            body = {}
        checks = body.get("checks") if isinstance(body, dict) else None
        return {
            "status": "ready" if response.status_code == 200 else "not_ready",
            "checks": checks if isinstance(checks, dict) else {},
            "error": None if response.status_code == 200 else f"HTTP {response.status_code}",
        }


class MongoRunRecords:
    def __init__(self, store: MongoStore) -> None:
        self._db = store.db

    async def recent(self, kind: RunKind, project_id: str, limit: int) -> list[Document]:
        # Not by _id, so FerretDB scans the collection: fine for an ops page polled every few
        # seconds, never used on an ingestion path.
        cursor = (
            self._db[COLLECTIONS[kind]]
            .find({"project_id": project_id})
            .sort("created_at", DESCENDING)
            .limit(limit)
        )
        return [doc async for doc in cursor]

    async def project_organization(self, project_id: str) -> str | None:
        doc = await self._db.projects.find_one({"_id": project_id}, {"organization_id": 1})
        return doc.get("organization_id") if doc else None
