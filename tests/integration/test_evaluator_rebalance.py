"""The evaluator hears of partitions it is given, through FastStream, from the real broker."""

import asyncio
import secrets

import pytest
from faststream.middlewares import AckPolicy

from audience_evaluator.handlers import OnPartitionsAssigned
from audience_shared.kafka import ensure_topics, make_broker
from audience_shared.topics import Topic

pytestmark = pytest.mark.integration


async def test_consumer_in_a_group__given_partitions__calls_back(kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap)
    assigned = asyncio.Event()
    broker = make_broker(kafka_bootstrap, client_id="rebalance-test")

    # Subscribed as EvaluatorHandlers.register subscribes to user events, in a group of its own.
    @broker.subscriber(
        Topic.USER_EVENTS,
        group_id=f"rebalance-test-{secrets.token_hex(4)}",
        batch=True,
        auto_offset_reset="latest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        listener=OnPartitionsAssigned(assigned.set),
    )
    async def ignore(_: list[bytes]) -> None:
        pass

    await broker.start()
    try:
        await asyncio.wait_for(assigned.wait(), timeout=60)
    finally:
        await broker.stop()
