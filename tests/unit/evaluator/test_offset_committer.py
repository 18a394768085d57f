"""Offsets committed in the background once batches are processed: forward only, none lost."""

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from audience_evaluator.adapters import kafka as kafka_adapters
from audience_evaluator.adapters.kafka import OffsetCommitter

TOPIC = "user.events.v1"


class FakeConsumer:
    def __init__(self, partitions: set[int]) -> None:
        self.assigned = {TopicPartition(TOPIC, p) for p in partitions}
        self.commits: list[dict[TopicPartition, int]] = []
        self.fail_next = 0
        self.release = asyncio.Event()
        self.release.set()

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.release.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise KafkaConnectionError("broker down")
        self.commits.append(dict(offsets))

    def committed(self) -> dict[int, int]:
        latest: dict[int, int] = {}
        for commit in self.commits:
            latest.update({tp.partition: offset for tp, offset in commit.items()})
        return latest


def records(partition: int, *offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    fields: dict[str, Any] = dict(
        topic=TOPIC,
        partition=partition,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=(),
    )
    return [ConsumerRecord(offset=offset, **fields) for offset in offsets]


async def settled() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_batches__committed_past_their_last_record_without_waiting() -> None:
    consumer, offsets = FakeConsumer({0, 1}), OffsetCommitter()
    offsets.processed(consumer, records(0, 5, 3, 4) + records(1, 9))
    await settled()
    assert consumer.committed() == {0: 6, 1: 10}


async def test_batches_while_a_commit_is_in_flight__go_together_and_only_forward() -> None:
    consumer, offsets = FakeConsumer({0, 1}), OffsetCommitter()
    consumer.release.clear()
    offsets.processed(consumer, records(0, 1))
    await settled()
    offsets.processed(consumer, records(0, 2))
    offsets.processed(consumer, records(1, 7))
    consumer.release.set()
    await settled()
    assert consumer.commits == [
        {TopicPartition(TOPIC, 0): 2},
        {TopicPartition(TOPIC, 0): 3, TopicPartition(TOPIC, 1): 8},
    ]


async def test_failed_commit__kept_for_the_next__a_given_away_partition_left_to_its_owner() -> None:
    consumer, offsets = FakeConsumer({0, 1}), OffsetCommitter()
    consumer.fail_next = 1
    offsets.processed(consumer, records(0, 4) + records(1, 2))
    await settled()
    assert consumer.commits == []
    consumer.assigned = {TopicPartition(TOPIC, 0)}  # partition 1 went to another process
    await offsets.flush()
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 5}]
    await offsets.stop()


async def test_failed_commit__tried_again_without_new_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_adapters, "COMMIT_RETRY_S", 0.01)
    consumer, offsets = FakeConsumer({0}), OffsetCommitter()
    consumer.fail_next = 1
    offsets.processed(consumer, records(0, 8))
    async with asyncio.timeout(2):
        while not consumer.commits:
            await asyncio.sleep(0.01)
    assert consumer.committed() == {0: 9}
    await offsets.stop()


async def test_commit_cancelled_at_shutdown__its_offsets_still_committed_by_stop() -> None:
    consumer, offsets = FakeConsumer({0}), OffsetCommitter()
    consumer.release.clear()
    offsets.processed(consumer, records(0, 3))
    await settled()  # the background commit is waiting on the broker
    stopping = asyncio.create_task(offsets.stop())
    await settled()
    consumer.release.set()
    await stopping
    assert consumer.committed() == {0: 4}


async def test_interval__batches_within_it_wait__then_go_together() -> None:
    consumer, offsets = FakeConsumer({0, 1}), OffsetCommitter(interval_s=0.2)
    offsets.processed(consumer, records(0, 1))
    await settled()
    offsets.processed(consumer, records(0, 2))
    offsets.processed(consumer, records(1, 7))
    await settled()
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 2}]  # the first at once
    async with asyncio.timeout(2):
        while len(consumer.commits) < 2:
            await asyncio.sleep(0.01)
    assert consumer.commits[1] == {TopicPartition(TOPIC, 0): 3, TopicPartition(TOPIC, 1): 8}
    await offsets.stop()


async def waiting_in_the_interval(last: int) -> tuple[FakeConsumer, OffsetCommitter]:
    """A committer that committed one batch and holds the next one (up to `last`) for a pause
    far longer than any test."""
    consumer, offsets = FakeConsumer({0}), OffsetCommitter(interval_s=60)
    offsets.processed(consumer, records(0, 1))
    await settled()
    offsets.processed(consumer, records(0, last))
    return consumer, offsets


async def test_interval__stop_commits_what_waits_without_waiting_for_it() -> None:
    consumer, offsets = await waiting_in_the_interval(5)
    async with asyncio.timeout(2):
        await offsets.stop()
    assert consumer.committed() == {0: 6}


async def test_interval__a_flush_before_partitions_go__does_not_wait_for_it() -> None:
    consumer, offsets = await waiting_in_the_interval(4)
    async with asyncio.timeout(1):
        assert await offsets.flush()
    assert consumer.committed() == {0: 5}
    await offsets.stop()
