"""A dead letter for an oversized record must itself fit the producer's request limit."""

import base64
import json
from typing import Any

from audience_shared.kafka import MAX_DEAD_LETTER_PAYLOAD, KafkaDeadLetters


class RecordingBroker:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, message: dict[str, Any], **kwargs: Any) -> None:
        self.published.append(message)


async def test_send__record_over_the_limit__letter_fits_one_mebibyte() -> None:
    broker = RecordingBroker()
    payload = b"x" * 1_000_100
    await KafkaDeadLetters(broker).send(  # type: ignore[arg-type]
        "user.events.v1", 0, 7, b"p/u", payload, "record too large"
    )
    letter = broker.published[0]
    assert len(json.dumps(letter).encode()) < 1024 * 1024
    assert base64.b64decode(letter["payload_b64"]) == payload[:MAX_DEAD_LETTER_PAYLOAD]
    assert f"of {len(payload)} bytes" in letter["error"]


async def test_send__small_record__kept_whole() -> None:
    broker = RecordingBroker()
    await KafkaDeadLetters(broker).send(  # type: ignore[arg-type]
        "user.events.v1", 0, 7, None, b"{not json", "bad json"
    )
    assert base64.b64decode(broker.published[0]["payload_b64"]) == b"{not json"
    assert broker.published[0]["error"] == "bad json"
