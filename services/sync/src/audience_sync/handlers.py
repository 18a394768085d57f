"""Kafka handlers of the sync service: record and wake; long work runs in the worker loop."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_random_exponential

from audience_shared.commands import (
    AnySyncCommand,
    DatasetImportRequested,
    ExportRequested,
    ImportRequested,
    SyncRequested,
    sync_command_adapter,
)
from audience_shared.kafka import KafkaDeadLetters
from audience_shared.topics import Topic
from audience_sync.config import Settings
from audience_sync.errors import is_transient
from audience_sync.metrics import DEAD_LETTERS
from audience_sync.ports import JobStore

log = structlog.get_logger()
T = TypeVar("T")

MAX_RECORD_BYTES = 1_000_000


async def raw_records(msg: StreamMessage[Any]) -> Any:
    """Keep the raw records: each is validated on its own so one poison record harms no other."""
    raw = msg.raw_message
    return list(raw) if isinstance(raw, tuple) else [raw]


def record_of(command: AnySyncCommand) -> tuple[str, str]:
    if isinstance(command, SyncRequested):
        return "sync", command.run_id
    if isinstance(command, ImportRequested):
        return "import", command.import_id
    if isinstance(command, DatasetImportRequested):
        return "dataset_import", command.import_id
    assert isinstance(command, ExportRequested)
    return "export", command.export_id


class SyncHandlers:
    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        wake: Callable[[], None],
        dead_letters: KafkaDeadLetters,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._wake = wake
        self._dead_letters = dead_letters

    async def retrying(self, action: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.2, max=self._settings.max_backoff_s),
            stop=stop_after_delay(240),  # then the batch is nacked and redelivered
            reraise=True,
        ):
            with attempt:
                return await action()
        raise AssertionError("unreachable")

    async def on_commands(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """The API recorded the work before publishing; check it is there, then wake a worker."""
        for record in records:
            payload = record.value or b""
            try:
                if len(payload) > MAX_RECORD_BYTES:
                    raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
                command = sync_command_adapter.validate_json(payload)
                kind, record_id = record_of(command)
                found = await self.retrying(lambda k=kind, r=record_id: self._jobs.get(k, r))  # type: ignore[misc]
                if found is None:
                    raise ValueError(f"no {kind} record {record_id!r} for this command")
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(record, exc)
                continue
            log.info("command.received", type=command.type, record_id=record_id)
        self._wake()

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        DEAD_LETTERS.inc()
        log.warning(
            "command.dead_lettered",
            partition=record.partition,
            offset=record.offset,
            error=str(exc)[:500],
        )
        await self.retrying(
            lambda: self._dead_letters.send(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                record.value or b"",
                str(exc),
            )
        )

    def register(self, broker: KafkaBroker) -> None:
        broker.subscriber(
            Topic.SYNC_REQUESTS,
            group_id=self._settings.sync_consumer_group,
            batch=True,
            max_records=100,
            batch_timeout_ms=50,
            auto_offset_reset="earliest",
            # Commit only after every command's record was found (or dead-lettered).
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=raw_records,
        )(self.on_commands)
