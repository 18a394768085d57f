"""Publishes user events and audience changes to Kafka through FastStream."""

import asyncio
from collections.abc import Sequence

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faststream.kafka import KafkaBroker

from audience_api.errors import ApiError, Unavailable
from audience_shared.events import AudienceChanged, UserEventBase
from audience_shared.topics import Topic


class BrokerUnavailable(Unavailable):
    """The broker did not acknowledge in time: nothing of the request was accepted."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "The event broker is not reachable; nothing was accepted, retry after Retry-After",
            retry_after_s=retry_after_s,
        )
        self.code = "broker_unavailable"


class EventTooLarge(ApiError):
    """An event over the broker's message limit: retrying cannot help, so it is no 503."""

    status = 413

    def __init__(self) -> None:
        super().__init__("payload_too_large", "An event is larger than the broker accepts")


class KafkaEventPublisher:
    """Every publish waits for the broker's acknowledgement (acks=all) before returning.

    The wait is bounded: a caller gets 202 only for events the broker acknowledged, and a 503
    well before an HTTP client gives up. An unacknowledged send may still reach the broker
    after the 503 (the producer retries it in the background); clients that retry with the
    same `event_id` are deduplicated by the evaluator, so the retry costs nothing.
    """

    def __init__(self, broker: KafkaBroker, timeout_s: float = 5.0) -> None:
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
        except MessageSizeTooLargeError as exc:
            raise EventTooLarge() from exc
        except (TimeoutError, KafkaError) as exc:
            # The caller gets a 503 and retries; an event we could not publish was never accepted.
            raise BrokerUnavailable(retry_after_s=max(1, round(self._timeout_s))) from exc
