"""Kafka handlers of the evaluator: decode each record, call one service, acknowledge after."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from audience_evaluator.adapters.kafka import OffsetCommitter
from audience_evaluator.config import Settings
from audience_evaluator.errors import is_transient
from audience_evaluator.garbage import BatchCollector
from audience_evaluator.metrics import (
    BATCH_SECONDS,
    BATCH_SIZE,
    DEAD_LETTERS,
    EVENTS_CONSUMED,
    STAGE_SECONDS,
    STORE_ERRORS,
)
from audience_evaluator.services import AudienceLifecycleService, MembershipService
from audience_shared.events import AudienceChanged, UserEventBase, user_event_adapter
from audience_shared.kafka import KafkaDeadLetters
from audience_shared.topics import Topic

log = structlog.get_logger()
T = TypeVar("T")

# One record bigger than this is refused outright rather than parsed.
MAX_RECORD_BYTES = 1_000_000


def _on_retry(what: str, state: RetryCallState) -> None:
    STORE_ERRORS.labels(work=what).inc()
    log.warning(
        "store_or_broker.unavailable",
        work=what,
        attempt=state.attempt_number,
        error=repr(state.outcome.exception()) if state.outcome else None,
    )


@contextlib.contextmanager
def _logged_failures(what: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> Iterator[None]:
    """FastStream swallows handler exceptions; log each with its traceback before the batch is
    rewound (nack) and redelivered."""
    try:
        yield
    except Exception:
        log.exception(
            "batch.failed",
            work=what,
            records=len(records),
            partitions=sorted({r.partition for r in records}),
        )
        raise


async def raw_records(msg: StreamMessage[Any]) -> Any:
    """Keep the raw records: each is validated on its own so one poison record harms no other."""
    raw = msg.raw_message
    return list(raw) if isinstance(raw, tuple) else [raw]


async def with_arrivals(
    consumer: AIOKafkaConsumer,
    records: list[ConsumerRecord[bytes, bytes]],
    settings: Settings,
) -> list[ConsumerRecord[bytes, bytes]]:
    """The batch with what the consumer fetched since its records were, without waiting.

    The consumer fetches a partition again only once its buffered records are taken, so what a
    batch is handed was fetched as the previous batch began: as old as that batch's processing.
    Without this, under load every event would wait a batch more before it is processed. It
    does not wait for a fetch still in flight: waiting for it (up to fetch_max_wait_ms) made
    every batch under load 20 to 25 ms longer, and a longer batch gathers a bigger next one, so
    the workload's batches settled at twice the size and the latency (bench-evaluator, p99 343
    ms against 162-325 ms without the wait)."""
    room = settings.batch_max_records - len(records)
    if room <= 0:
        return records
    arrived = await consumer.getmany(timeout_ms=0, max_records=room)
    return [*records, *(record for batch in arrived.values() for record in batch)]


def rewind(consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
    """Seek each partition of a failed batch back to its first record, so the batch (the records
    FastStream handed over and those taken with them) is delivered again, and nothing after it
    is committed first. FastStream's own rewind covers only the records it handed over."""
    earliest: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        earliest[partition] = min(record.offset, earliest.get(partition, record.offset))
    assigned = consumer.assignment()
    for partition, offset in earliest.items():
        if partition in assigned:  # one revoked meanwhile is redelivered to its new owner
            consumer.seek(partition, offset)


class OnPartitionsAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls back when this consumer is given partitions (at startup, and after a rebalance);
    commits what it processed before it gives partitions away, so their new owner does not
    process it again."""

    def __init__(self, callback: Callable[[set[int]], None], offsets: OffsetCommitter) -> None:
        self._callback = callback
        self._offsets = offsets

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._offsets.flush()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in assigned}
        log.info("partitions.assigned", partitions=sorted(partitions))
        self._callback(partitions)


class EvaluatorHandlers:
    """Holds the services; `lock` runs audience builds one at a time (profiles have their own
    lock inside MembershipService, so live events keep flowing while a build runs)."""

    def __init__(
        self,
        settings: Settings,
        memberships: MembershipService,
        lifecycle: AudienceLifecycleService,
        dead_letters: KafkaDeadLetters,
        lock: asyncio.Lock,
        on_partitions_assigned: Callable[[set[int]], None] = lambda partitions: None,
    ) -> None:
        self._settings = settings
        self._collector = BatchCollector(settings.gc_full_interval_s)
        # Called with the user-events partitions this process holds after each assignment.
        self._on_partitions_assigned = on_partitions_assigned
        self._memberships = memberships
        self._lifecycle = lifecycle
        self._dead_letters = dead_letters
        self.lock = lock
        # Offsets are committed after batches are processed, without a batch waiting.
        self.offsets = OffsetCommitter(settings.commit_interval_s)

    async def retrying(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Retry outages with jittered backoff; anything else propagates."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.2, max=self._settings.max_backoff_s),
            stop=stop_after_delay(240),  # then the batch is nacked and redelivered
            before_sleep=lambda state: _on_retry(what, state),
            reraise=True,
        ):
            with attempt:
                return await action()
        raise AssertionError("unreachable")

    async def _decode(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], parse: Callable[[bytes], T]
    ) -> list[T]:
        good: list[T] = []
        if records:
            EVENTS_CONSUMED.labels(topic=records[0].topic).inc(len(records))
        for record in records:
            payload = record.value or b""
            try:
                if len(payload) > MAX_RECORD_BYTES:
                    raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
                good.append(parse(payload))
            except (ValidationError, ValueError) as exc:
                DEAD_LETTERS.labels(topic=record.topic).inc()
                log.warning(
                    "message.dead_lettered",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=str(exc)[:500],
                )
                await self.retrying(
                    "dead_letter",
                    lambda r=record, e=exc: self._dead_letters.send(  # type: ignore[misc]
                        r.topic, r.partition, r.offset, r.key, r.value or b"", str(e)
                    ),
                )
        return good

    async def on_user_events(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        with _logged_failures("user_events", records):
            await self._on_user_events(records)

    async def _on_user_events(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        consumer = self._user_events.consumer
        if consumer is not None:
            with STAGE_SECONDS.labels("fetch").time():
                records = await with_arrivals(consumer, records, self._settings)
        started = time.perf_counter()
        try:
            with STAGE_SECONDS.labels("decode").time():
                events: list[UserEventBase] = await self._decode(
                    records, user_event_adapter.validate_json
                )
            if events:
                BATCH_SIZE.observe(len(events))
                changes = await self.retrying(
                    "user_events", lambda: self._memberships.apply_user_events(events)
                )
                BATCH_SECONDS.observe(time.perf_counter() - started)
                log.debug("batch.processed", events=len(events), membership_changes=changes)
        except BaseException:
            if consumer is not None:
                rewind(consumer, records)
            raise
        if consumer is not None:
            self.offsets.processed(consumer, records)
        # Only after a batch that went through: a failed one's exception and traceback are still
        # alive here, and would be frozen with their cycles.
        self._collector.after_batch()

    async def on_audience_changes(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        with _logged_failures("audience_changes", records):
            await self._on_audience_changes(records)

    async def _on_audience_changes(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        changes = await self._decode(records, AudienceChanged.model_validate_json)
        for change in changes:
            structlog.contextvars.bind_contextvars(audience_id=change.audience_id)
            async with self.lock:
                await self.retrying(
                    "audience_change",
                    lambda c=change: self._lifecycle.on_change(  # type: ignore[misc]
                        c.audience_id, c.change, c.version, c.occurred_at
                    ),
                )
            structlog.contextvars.unbind_contextvars("audience_id")

    def register(self, broker: KafkaBroker) -> None:
        self._user_events = broker.subscriber(
            Topic.USER_EVENTS,
            group_id=self._settings.consumer_group,
            batch=True,
            max_records=self._settings.batch_max_records,
            batch_timeout_ms=self._settings.batch_timeout_ms,
            fetch_min_bytes=self._settings.fetch_min_bytes,
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            # Offsets are committed by self.offsets once a batch is processed, i.e. after its
            # store writes and deliveries succeeded; an exception rewinds the partitions so the
            # batch is delivered again.
            ack_policy=AckPolicy.MANUAL,
            decoder=raw_records,
            listener=OnPartitionsAssigned(self._on_partitions_assigned, self.offsets),
        )
        self._user_events(self.on_user_events)
        # Every evaluator process keeps its own registry current, so each reads every audience
        # change (no group). Missed changes are covered by the reload from the store at startup;
        # builds are claimed in the store so only one process backfills.
        self._audience_changes = broker.subscriber(
            Topic.AUDIENCE_CHANGES,
            batch=True,
            max_records=50,
            batch_timeout_ms=self._settings.batch_timeout_ms,
            auto_offset_reset="latest",
            decoder=raw_records,
        )
        self._audience_changes(self.on_audience_changes)

    async def audience_changes_positioned(self, timeout_s: float = 60.0) -> None:
        """Wait until the audience-changes consumer has its starting offsets: every change
        published from then on reaches this process. A change published between the startup
        reload of the catalog and this moment does not, so the caller reloads again after it."""
        consumer = self._audience_changes.consumer
        if consumer is None:
            return  # not started (the broker is not running)
        async with asyncio.timeout(timeout_s):
            # A consumer without a group has no assignment callback to wait on: poll.
            while not consumer.assignment():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for partition in consumer.assignment():
                await consumer.position(partition)
