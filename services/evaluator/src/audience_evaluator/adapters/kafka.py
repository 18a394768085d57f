"""Kafka adapters of the evaluator: membership events out."""

import asyncio
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from audience_evaluator.metrics import MEMBERSHIP_CHANGES
from audience_shared.events import MembershipChanged
from audience_shared.kafka import JSON_HEADERS, PUBLISH_TIMEOUT_S
from audience_shared.topics import Topic


class KafkaMembershipPublisher:
    """Sends membership changes with a producer of its own, started on first use (and made anew
    after a failed start, which leaves an aiokafka producer unusable)."""

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer]) -> None:
        self._make_producer = make_producer
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def publish(self, changes: Sequence[MembershipChanged]) -> None:
        for change in changes:
            MEMBERSHIP_CHANGES.labels(type=change.type, reason=change.reason).inc()
        await asyncio.wait_for(self._send_all(changes), PUBLISH_TIMEOUT_S)

    async def _send_all(self, changes: Sequence[MembershipChanged]) -> None:
        producer = await self._started()
        # Enqueued one after another (so each user's changes keep their order), acknowledged
        # together: an await returns at once unless the batch is full. Thousands of concurrent
        # sends would instead all wake up each time a batch drains.
        deliveries = [
            await producer.send(
                Topic.MEMBERSHIP_CHANGES,
                value=change.model_dump_json().encode(),
                key=change.key,
                headers=JSON_HEADERS,
            )
            for change in changes
        ]
        await asyncio.gather(*deliveries)

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
