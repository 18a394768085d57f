"""Publishes user events and audience changes to Kafka through FastStream."""

import asyncio
from collections.abc import Sequence

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from audience_api.errors import Unavailable
from audience_shared.events import AudienceChanged, UserEventBase
from audience_shared.topics import Topic


class KafkaEventPublisher:
    """Every publish waits for the broker's acknowledgement (acks=all) before returning."""

    def __init__(self, broker: KafkaBroker, timeout_s: float = 10.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def publish_user_events(self, events: Sequence[UserEventBase]) -> None:
        # Publish concurrently so one request's batch costs one round of broker acknowledgements.
        await self._guarded(
            asyncio.gather(
                *(
                    self._broker.publish(
                        event.model_dump(mode="json"), topic=Topic.USER_EVENTS, key=event.key
                    )
                    for event in events
                )
            )
        )

    async def publish_audience_changed(self, event: AudienceChanged) -> None:
        await self._guarded(
            self._broker.publish(
                event.model_dump(mode="json"), topic=Topic.AUDIENCE_CHANGES, key=event.key
            )
        )

    async def is_ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._broker.ping(timeout=2.0), timeout=3.0))
        except (TimeoutError, KafkaError):
            return False

    async def _guarded(self, awaitable: object) -> None:
        try:
            await asyncio.wait_for(awaitable, timeout=self._timeout_s)  # type: ignore[arg-type]
        except (TimeoutError, KafkaError) as exc:
            # The caller gets a 503 and retries; an event we could not publish was never accepted.
            raise Unavailable("The event broker is not reachable; retry shortly") from exc
