"""The sync service's composition root: the only place that picks adapters."""

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import structlog
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from audience_shared.kafka import KafkaDeadLetters, ensure_topics, make_broker
from audience_shared.schema import INDEXES, UNIQUE
from audience_shared.store import connect_store, ensure_schema, ping
from audience_sync.adapters.files import CsvFiles, ExportFile
from audience_sync.adapters.kafka import (
    KafkaCommandPublisher,
    KafkaUserEventPublisher,
)
from audience_sync.adapters.klaviyo import KlaviyoClient
from audience_sync.adapters.mongo import (
    MongoIdentityStore,
    MongoJobStore,
    MongoMemberSource,
    MongoScheduleStore,
    MongoSyncStore,
)
from audience_sync.adapters.secrets import integration_cipher
from audience_sync.config import Settings
from audience_sync.datasets import DatasetImportService
from audience_sync.errors import is_transient
from audience_sync.handlers import SyncHandlers
from audience_sync.ports import Document
from audience_sync.scheduler import Scheduler
from audience_sync.services import (
    CsvImportService,
    ExportService,
    IdentityResolver,
    KlaviyoSyncService,
)
from audience_sync.worker import JobWorker

log = structlog.get_logger()


@dataclass
class Container:
    settings: Settings
    client: AsyncMongoClient[dict[str, Any]]
    broker: KafkaBroker
    events: KafkaUserEventPublisher
    klaviyo: KlaviyoClient
    sync_store: MongoSyncStore
    worker: JobWorker
    scheduler: Scheduler
    handlers: SyncHandlers
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> "Container":
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"
        client = connect_store(settings.mongo_url)
        db = client[settings.mongo_database]
        broker = make_broker(settings.kafka_bootstrap, client_id="audiences-sync")
        events = KafkaUserEventPublisher(settings.kafka_bootstrap, client_id="audiences-sync-bulk")
        klaviyo = KlaviyoClient(
            settings.klaviyo_base_url,
            settings.klaviyo_revision,
            settings.klaviyo_requests_per_second,
            page_size=settings.klaviyo_page_size,
            timeout_s=settings.klaviyo_timeout_s,
            max_attempts=settings.klaviyo_max_attempts,
            backoff_max_s=settings.klaviyo_backoff_max_s,
            max_retry_after_s=settings.klaviyo_max_retry_after_s,
        )
        cipher = integration_cipher(settings.secret_key.get_secret_value())
        sync_store = MongoSyncStore(db)
        identities = IdentityResolver(MongoIdentityStore(db))
        jobs = MongoJobStore(db)
        klaviyo_sync = KlaviyoSyncService(
            klaviyo, sync_store, identities, events, lambda token: cipher.decrypt(token).decode()
        )
        imports = CsvImportService(
            CsvFiles(settings.imports_dir), identities, events, settings.import_chunk_rows
        )
        dataset_imports = DatasetImportService(
            CsvFiles(settings.imports_dir), identities, events, settings.import_chunk_rows
        )
        exports = ExportService(
            MongoMemberSource(db),
            lambda: ExportFile(settings.exports_dir),
            settings.export_page_rows,
        )

        async def after_sync(run: Document, ok: bool) -> None:
            if not ok:
                await sync_store.finish_sync(run["audience_id"], run["_id"], False, {})
            await sync_store.release_sync_lock(run["audience_id"], run["_id"])

        worker = JobWorker(
            jobs,
            actions={
                "sync": klaviyo_sync.run,
                "import": imports.run,
                "export": exports.run,
                "dataset_import": dataset_imports.run,
            },
            after={"sync": after_sync},
            owner=owner,
            lease_s=settings.job_lease_s,
            poll_s=settings.job_poll_s,
            retry_s=settings.run_retry_s,
            max_backoff_s=settings.max_backoff_s,
        )
        offset = timedelta(seconds=settings.scheduler_clock_offset_s)
        scheduler = Scheduler(
            MongoScheduleStore(db),
            KafkaCommandPublisher(broker),
            owner,
            settings.incremental_interval_s,
            lease_ttl_s=max(60.0, settings.scheduler_interval_s * 4),
            clock=lambda: datetime.now(UTC) + offset,
        )
        handlers = SyncHandlers(settings, jobs, worker.wake, KafkaDeadLetters(broker))
        handlers.register(broker)
        return cls(
            settings=settings,
            client=client,
            broker=broker,
            events=events,
            klaviyo=klaviyo,
            sync_store=sync_store,
            worker=worker,
            scheduler=scheduler,
            handlers=handlers,
        )

    async def start(self) -> None:
        """Topics, indexes, producers and consumers, retried until the broker and store answer."""
        await self.handlers.retrying(lambda: ensure_topics(self.settings.kafka_bootstrap))
        await self.handlers.retrying(
            lambda: ensure_schema(self.client[self.settings.mongo_database], INDEXES, UNIQUE)
        )
        self.settings.imports_dir.mkdir(parents=True, exist_ok=True)
        self.settings.exports_dir.mkdir(parents=True, exist_ok=True)
        await self.handlers.retrying(self.events.start)
        await self.broker.start()
        for _ in range(self.settings.workers):
            self.background.append(asyncio.create_task(self.worker.run_forever()))
        self.background.append(asyncio.create_task(self.run_scheduler()))

    async def run_scheduler(self) -> None:
        while True:
            try:
                await self.scheduler.tick()
            except Exception as exc:
                log.warning("schedule.tick_failed", error=repr(exc), transient=is_transient(exc))
            await asyncio.sleep(self.settings.scheduler_interval_s)

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()
        await self.events.stop()
        await self.klaviyo.aclose()
        await self.client.close()

    async def readiness(self) -> dict[str, bool]:
        broker_ok = False
        try:
            broker_ok = bool(await asyncio.wait_for(self.broker.ping(timeout=2.0), 3.0))
        except Exception:
            broker_ok = False
        return {"store": await ping(self.client), "broker": broker_ok}
