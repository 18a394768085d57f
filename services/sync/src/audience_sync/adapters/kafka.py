"""Kafka adapters of the sync service: bulk user events, commands, refreshes, dead letters."""

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from audience_shared.commands import AnySyncCommand
from audience_shared.events import AudienceChanged, UserEventBase
from audience_shared.topics import Topic


class KafkaUserEventPublisher:
    """Publishes imports' user events straight through aiokafka's batching producer.

    A million-row import is two million small records; FastStream's per-message publish path
    costs several times more CPU per record than the producer's own batching, so bulk traffic
    takes the direct route. Same guarantees: acks=all, idempotence, keys always set.
    """

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka binds its producer to the running loop, so it is made here, not in __init__.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,  # see audience_shared.kafka.make_broker
            linger_ms=20,
            max_batch_size=256 * 1024,
            request_timeout_ms=15_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, events: Sequence[UserEventBase]) -> None:
        assert self._producer is not None, "start() first"
        producer = self._producer
        # Sends are appended in order (per-user order holds) and acknowledged together.
        futures = [
            await producer.send(
                Topic.USER_EVENTS, value=event.model_dump_json().encode(), key=event.key
            )
            for event in events
        ]
        if futures:
            await asyncio.gather(*futures)


class KafkaCommandPublisher:
    """Commands (scheduled runs and unloads) and audience refresh requests, through FastStream."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish_command(self, command: AnySyncCommand) -> None:
        await self._broker.publish(
            command.model_dump(mode="json"), topic=Topic.SYNC_REQUESTS, key=command.key
        )

    async def publish_audience_changed(self, event: AudienceChanged) -> None:
        await self._broker.publish(
            event.model_dump(mode="json"), topic=Topic.AUDIENCE_CHANGES, key=event.key
        )
