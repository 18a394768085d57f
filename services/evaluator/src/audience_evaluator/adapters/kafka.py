"""Kafka adapters of the evaluator: membership events out, processed offsets committed."""

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from audience_evaluator.metrics import MEMBERSHIP_CHANGES
from audience_shared.events import MembershipChanged
from audience_shared.kafka import JSON_HEADERS, PUBLISH_TIMEOUT_S
from audience_shared.topics import Topic

log = structlog.get_logger()

# The partitioner a keyed send uses (murmur2 of the key, as Kafka's Java clients).
PARTITIONER = DefaultPartitioner()
TO_JSON = MembershipChanged.__pydantic_serializer__.to_json
# A failed offset commit is tried again after this long, if no batch brought a new one first.
COMMIT_RETRY_S = 1.0


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


class OffsetCommitter:
    """Commits the offsets of processed records in the background.

    A batch's records are processed (written, delivered) before they are handed here, so what is
    committed is done; a batch does not wait for the broker's answer (5 to 15 ms, a tenth of a
    batch under load), and offsets that come while a commit is in flight, or within
    `interval_s` of the last commit, go together in the next one. A partition's offset only
    moves forward. What a crash, a failed commit or a revoked partition leaves uncommitted is
    delivered again, and processing it again changes nothing (at least once)."""

    def __init__(self, interval_s: float = 0.0) -> None:
        self._interval_s = interval_s
        self._pending: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._wake = asyncio.Event()
        self._committing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def processed(
        self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """These records are done: their offsets go out with the next commit."""
        # The next offset of each partition first: one TopicPartition per partition, not per
        # record (a batch holds up to thousands of records of a few partitions).
        next_offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), record.offset + 1)
        for (topic, number), offset in next_offsets.items():
            partition = TopicPartition(topic, number)
            self._pending[partition] = max(self._pending.get(partition, 0), offset)
        self._consumer = consumer
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def flush(self) -> bool:
        """Commit what is pending now (before partitions are given away, and at shutdown);
        False when the commit failed (what it held is kept for the next)."""
        async with self._committing:
            offsets, self._pending = self._pending, {}
            consumer = self._consumer
            if consumer is None:
                return True
            # A partition given away meanwhile is its new owner's to commit.
            assigned = consumer.assignment()
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not offsets:
                return True
            try:
                await consumer.commit(offsets)
            except BaseException as exc:
                # Kept for the next commit, also when this one was cancelled (at shutdown); a
                # newer offset of a partition that came meanwhile replaces its own.
                for tp, offset in offsets.items():
                    self._pending[tp] = max(self._pending.get(tp, 0), offset)
                if not isinstance(exc, KafkaError):
                    raise
                log.warning("offsets.not_committed", error=repr(exc))
                return False
            return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():  # again after a pause, batches or not
                await asyncio.sleep(COMMIT_RETRY_S)
                self._wake.set()
            elif self._interval_s:
                # A commit is a broker request and a write of the offsets topic: one per batch
                # (dozens a second under load) cost the broker a quarter of its CPU.
                await asyncio.sleep(self._interval_s)
