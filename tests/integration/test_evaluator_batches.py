"""How the evaluator takes its batches from the real broker: fresh records, and a rewind."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from audience_evaluator.config import Settings
from audience_evaluator.handlers import rewind, with_arrivals
from tests.integration.helpers import produce

pytestmark = pytest.mark.integration


@pytest.fixture
async def consumer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of a fresh one-partition topic, fetching as the evaluator's does."""
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    settings = Settings()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_min_bytes=settings.fetch_min_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def send(bootstrap: str, consumer: AIOKafkaConsumer, label: str) -> None:
    (topic,) = consumer.subscription()
    await produce(bootstrap, [(b"k", f"{label}{n}".encode()) for n in range(5)], topic=topic)


async def take(consumer: AIOKafkaConsumer, expected: int) -> list[ConsumerRecord[bytes, bytes]]:
    records: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(10):
        while len(records) < expected:
            batches = await consumer.getmany(timeout_ms=200)
            records.extend(record for batch in batches.values() for record in batch)
    return records


def values(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [(record.value or b"").decode() for record in records]


async def handed_with_more_held(
    bootstrap: str, consumer: AIOKafkaConsumer
) -> list[ConsumerRecord[bytes, bytes]]:
    """The a's, handed to a batch of five while the b's (fetched with them) stay held."""
    (topic,) = consumer.subscription()
    records = [(b"k", f"{label}{n}".encode()) for label in "ab" for n in range(5)]
    await produce(bootstrap, records, topic=topic)
    await asyncio.sleep(0.5)
    handed: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(10):
        while not handed:
            batches = await consumer.getmany(timeout_ms=200, max_records=5)
            handed.extend(record for batch in batches.values() for record in batch)
    return handed


async def test_with_arrivals__records_the_consumer_holds__taken_with_the_batch(
    kafka_bootstrap: str, consumer: AIOKafkaConsumer
) -> None:
    handed = await handed_with_more_held(kafka_bootstrap, consumer)
    batch = await with_arrivals(consumer, handed, Settings())

    assert values(handed) == [f"a{n}" for n in range(5)]
    assert values(batch) == [f"{label}{n}" for label in "ab" for n in range(5)]


async def test_with_arrivals__a_fetch_in_flight__not_waited_for(
    kafka_bootstrap: str, consumer: AIOKafkaConsumer
) -> None:
    """b arrives during a slow batch (of the a's) and is fetched; c arrives after, not fetched
    while b is held. Taking b sends the fetch for c, which the broker holds for
    fetch_min_bytes (up to fetch_max_wait_ms): the batch of b does not wait for it, c comes
    with the next."""
    await send(kafka_bootstrap, consumer, "a")
    await take(consumer, 5)
    await send(kafka_bootstrap, consumer, "b")
    await asyncio.sleep(0.5)
    await send(kafka_bootstrap, consumer, "c")
    await asyncio.sleep(0.5)
    handed = await take(consumer, 5)

    batch = await with_arrivals(consumer, handed, Settings())

    assert values(batch) == [f"b{n}" for n in range(5)]
    assert values(await take(consumer, 5)) == [f"c{n}" for n in range(5)]


async def test_with_arrivals__batch_full__waits_for_nothing(
    kafka_bootstrap: str, consumer: AIOKafkaConsumer
) -> None:
    await send(kafka_bootstrap, consumer, "a")
    handed = await take(consumer, 5)
    await send(kafka_bootstrap, consumer, "b")

    batch = await with_arrivals(consumer, handed, Settings(batch_max_records=5))

    assert batch == handed


async def test_rewind__failed_batch__delivered_again_from_its_first_record(
    kafka_bootstrap: str, consumer: AIOKafkaConsumer
) -> None:
    handed = await handed_with_more_held(kafka_bootstrap, consumer)
    batch = await with_arrivals(consumer, handed, Settings())
    assert len(batch) == 10

    rewind(consumer, batch)

    assert values(await take(consumer, 10)) == values(batch)
