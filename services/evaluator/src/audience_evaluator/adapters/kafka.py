"""Kafka adapters of the evaluator: membership events out, dead letters out."""

import asyncio
from collections.abc import Sequence

from faststream.kafka import KafkaBroker

from audience_evaluator.metrics import MEMBERSHIP_CHANGES
from audience_shared.events import MembershipChanged
from audience_shared.kafka import PUBLISH_TIMEOUT_S
from audience_shared.topics import Topic


class KafkaMembershipPublisher:
    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, changes: Sequence[MembershipChanged]) -> None:
        for change in changes:
            MEMBERSHIP_CHANGES.labels(type=change.type, reason=change.reason).inc()
        # Sends started in order keep per-user order (idempotent producer) in one round of acks.
        sends = asyncio.gather(
            *(
                self._broker.publish(
                    change.model_dump(mode="json"), topic=Topic.MEMBERSHIP_CHANGES, key=change.key
                )
                for change in changes
            )
        )
        await asyncio.wait_for(sends, PUBLISH_TIMEOUT_S)
