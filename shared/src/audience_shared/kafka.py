"""Kafka plumbing shared by the services: the broker factory and explicit topic creation."""

import asyncio
import base64
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from audience_shared.events import DeadLetter
from audience_shared.topics import PARTITIONS, Topic

# Every producer here: never loses an acknowledged message (acks=all, with retries).
#
# aiokafka's idempotent producer, under many concurrent sends, can fail for good with
# OutOfOrderSequenceNumber and then refuses every later send; a retried send may instead be
# written twice. Every message carries an `event_id` and every consumer here dedupes by it, so a
# duplicate costs nothing while a wedged producer stops the service.
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,
    # Keep retrying a publish while the broker restarts rather than failing the request fast.
    "request_timeout_ms": 15_000,
    # A batch of events can decide thousands of membership changes at once: big producer batches
    # send them in a few requests per partition instead of one per 16 KB.
    "max_batch_size": 512 * 1024,
    "linger_ms": 5,
}
JSON_HEADERS = [("content-type", b"application/json")]


def make_broker(bootstrap: str, client_id: str) -> KafkaBroker:
    """The FastStream broker of a service (see PRODUCER_SETTINGS)."""
    return KafkaBroker(bootstrap, client_id=client_id, logger=None, **PRODUCER_SETTINGS)


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    """A plain aiokafka producer with the broker's settings, for a hot path that sends thousands
    of keyed records at once: FastStream's per-message publish costs several times aiokafka's."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, **PRODUCER_SETTINGS)


async def ensure_topics(bootstrap: str) -> None:
    """Create every topic with its partition count; existing topics are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="audiences-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name=str(topic), num_partitions=PARTITIONS[topic], replication_factor=1)
            for topic in Topic
            if str(topic) not in existing
        ]
        if missing:
            # Another service may create them between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


# Base64 grows the payload by a third; the letter must stay under the producer's 1 MiB request
# limit, or the send fails for good and the record's partition stops behind it.
MAX_DEAD_LETTER_PAYLOAD = 700_000


# A publish that is not acknowledged within this long raises TimeoutError (a transient error:
# the caller retries). aiokafka can otherwise wait forever on a send (aio-libs/aiokafka#1101).
PUBLISH_TIMEOUT_S = 30.0


class KafkaDeadLetters:
    """Sends a record no handler can process to the dead-letter topic, with the error and the
    original bytes, so its partition keeps flowing and the record can be inspected later."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def send(
        self, topic: str, partition: int, offset: int, key: bytes | None, payload: bytes, error: str
    ) -> None:
        kept = payload[:MAX_DEAD_LETTER_PAYLOAD]
        if len(kept) < len(payload):
            error = f"{error[:1900]} (payload cut to its first {len(kept)} of {len(payload)} bytes)"
        letter = DeadLetter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode(errors="replace") if key is not None else None,
            error=error[:2000],
            payload_b64=base64.b64encode(kept).decode(),
        )
        await asyncio.wait_for(
            self._broker.publish(letter.model_dump(mode="json"), topic=Topic.DEAD_LETTERS, key=key),
            PUBLISH_TIMEOUT_S,
        )
