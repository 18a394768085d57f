"""Kafka adapters of the evaluator: membership events out."""

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from audience_evaluator.metrics import MEMBERSHIP_CHANGES
from audience_shared.events import MembershipChanged
from audience_shared.kafka import JSON_HEADERS, PUBLISH_TIMEOUT_S
from audience_shared.topics import Topic

# The partitioner a keyed send uses (murmur2 of the key, as Kafka's Java clients).
PARTITIONER = DefaultPartitioner()
TO_JSON = MembershipChanged.__pydantic_serializer__.to_json


class KafkaMembershipPublisher:
    """Sends membership changes with a producer of its own, started on first use (and made anew
    after a failed start, which leaves an aiokafka producer unusable)."""

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer]) -> None:
        self._make_producer = make_producer
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def publish(self, changes: Sequence[MembershipChanged]) -> None:
        # Counted per kind, not per change: a label lookup costs as much as building the change.
        for (kind, reason), count in Counter((c.type, c.reason) for c in changes).items():
            MEMBERSHIP_CHANGES.labels(type=kind, reason=reason).inc(count)
        await asyncio.wait_for(self._send_all(changes), PUBLISH_TIMEOUT_S)

    async def _send_all(self, changes: Sequence[MembershipChanged]) -> None:
        producer = await self._started()
        partitions = sorted(await producer.partitions_for(Topic.MEMBERSHIP_CHANGES))
        # Records go out in batches built here, one per partition, in the order of `changes` (so
        # each user's changes keep their order), partitioned by key as a plain send would be:
        # per-record sends cost more CPU than the rest of the publish.
        open_batches: dict[int, BatchBuilder] = {}
        deliveries: list[asyncio.Future[Any]] = []
        # A user's changes share a key, and murmur2 in Python costs more than the rest of a
        # record: once per key. They come one user after another (about ten per event).
        partition_of: dict[bytes, int] = {}
        project_id = user_id = ""
        key, partition = b"", 0
        for change in changes:
            if change.user_id != user_id or change.project_id != project_id:
                project_id, user_id, key = change.project_id, change.user_id, change.key
                partition = partition_of.get(key, -1)
                if partition < 0:
                    partition = partition_of[key] = PARTITIONER(key, partitions, partitions)
            # What model_dump_json() returns, as bytes, without its wrapper's cost per call.
            value = TO_JSON(change)
            batch = open_batches.get(partition)
            if batch is None or not _append(batch, key, value):
                if batch is not None:  # full: send it, start the partition's next one
                    deliveries.append(await self._send(producer, batch, partition))
                batch = open_batches[partition] = producer.create_batch()
                if not _append(batch, key, value):
                    raise ValueError(f"membership change too large to send: {len(value)} bytes")
        for partition, batch in open_batches.items():
            deliveries.append(await self._send(producer, batch, partition))
        await asyncio.gather(*deliveries)

    @staticmethod
    async def _send(
        producer: AIOKafkaProducer, batch: BatchBuilder, partition: int
    ) -> asyncio.Future[Any]:
        batch.close()
        delivery: asyncio.Future[Any] = await producer.send_batch(
            batch, Topic.MEMBERSHIP_CHANGES, partition=partition
        )
        return delivery

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = self._make_producer()
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def _append(batch: BatchBuilder, key: bytes, value: bytes) -> bool:
    """Add a record to the batch; False when the batch is full."""
    return batch.append(timestamp=None, key=key, value=value, headers=JSON_HEADERS) is not None
