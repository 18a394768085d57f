"""The evaluator's composition root: the only place that picks adapters."""

import asyncio
import functools
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from audience_evaluator.adapters.kafka import KafkaMembershipPublisher
from audience_evaluator.adapters.mongo import (
    MongoAudienceCatalog,
    MongoMembershipStore,
    MongoProfileStore,
)
from audience_evaluator.config import Settings
from audience_evaluator.errors import is_transient
from audience_evaluator.handlers import EvaluatorHandlers
from audience_evaluator.metrics import CONSUMER_LAG
from audience_evaluator.registry import AudienceRegistry
from audience_evaluator.services import (
    AudienceLifecycleService,
    Clock,
    MembershipService,
    SweepService,
)
from audience_shared.kafka import KafkaDeadLetters, ensure_topics, make_broker, make_producer
from audience_shared.schema import INDEXES, UNIQUE
from audience_shared.store import connect_store, ensure_schema, ping
from audience_shared.topics import PARTITIONS, Topic

log = structlog.get_logger()

RECONCILE_SPACING = 20


def _on_assigned(profiles: MongoProfileStore, sweeper: SweepService, partitions: set[int]) -> None:
    """A new assignment: count in its slot; look for due profiles another process kept."""
    profiles.count_in_slot_of(partitions)
    if partitions:
        sweeper.request_scan()


@dataclass
class Container:
    settings: Settings
    client: AsyncMongoClient[dict[str, Any]]
    broker: KafkaBroker
    registry: AudienceRegistry
    memberships: MembershipService
    lifecycle: AudienceLifecycleService
    publisher: KafkaMembershipPublisher
    sweeper: SweepService
    handlers: EvaluatorHandlers
    membership_store: MongoMembershipStore
    catalog: MongoAudienceCatalog

    @classmethod
    def build(cls, settings: Settings, clock: Clock) -> "Container":
        client = connect_store(settings.mongo_url)
        db = client[settings.mongo_database]
        broker = make_broker(settings.kafka_bootstrap, client_id="audiences-evaluator")
        registry = AudienceRegistry()
        profiles = MongoProfileStore(
            db,
            cache_size=settings.profile_cache_size,
            decoded_cache_size=settings.profile_cache_decoded_size,
        )
        publisher = KafkaMembershipPublisher(
            lambda: make_producer(settings.kafka_bootstrap, client_id="audiences-evaluator")
        )
        membership_store = MongoMembershipStore(db)
        catalog = MongoAudienceCatalog(db)
        memberships = MembershipService(
            profiles,
            membership_store,
            publisher,
            registry,
            clock,
        )
        lifecycle = AudienceLifecycleService(
            catalog,
            profiles,
            membership_store,
            memberships,
            registry,
            clock,
            settings.backfill_chunk,
            owner=f"{socket.gethostname()}:{os.getpid()}",
        )
        lock = asyncio.Lock()
        sweeper = SweepService(profiles, memberships, clock)
        handlers = EvaluatorHandlers(
            settings,
            memberships,
            lifecycle,
            KafkaDeadLetters(broker),
            lock,
            on_partitions_assigned=functools.partial(_on_assigned, profiles, sweeper),
        )
        handlers.register(broker)
        return cls(
            settings=settings,
            client=client,
            broker=broker,
            registry=registry,
            memberships=memberships,
            lifecycle=lifecycle,
            publisher=publisher,
            sweeper=sweeper,
            handlers=handlers,
            membership_store=membership_store,
            catalog=catalog,
        )

    async def prepare(self) -> None:
        """Topics, indexes, older data moved on and the audience registry, retried until the broker
        and store answer."""
        await self.handlers.retrying(
            "startup", lambda: ensure_topics(self.settings.kafka_bootstrap)
        )
        await self.handlers.retrying(
            "startup",
            lambda: ensure_schema(self.client[self.settings.mongo_database], INDEXES, UNIQUE),
        )
        # Before consuming: profiles written from here on must find their old join times there.
        await self.handlers.retrying("startup", self.membership_store.adopt_membership_documents)
        await self.handlers.retrying("startup", self.lifecycle.load_all)

    async def resume_builds(self) -> None:
        """Build what is not built: interrupted builds, and audiences created or changed while
        this process started, before its audience-changes consumer had a position."""
        try:
            await self.handlers.audience_changes_positioned()
        except TimeoutError:
            log.warning("audience_changes.not_positioned")  # the reconciler's reload covers it
        async with self.handlers.lock:
            await self.handlers.retrying("resume_builds", self.lifecycle.load_all)
            await self.handlers.retrying("resume_builds", self.lifecycle.resume_unfinished)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweeper.sweep_once()
            except Exception as exc:
                log.warning("sweep.failed", error=repr(exc), transient=is_transient(exc))

    async def run_reconciler(self) -> None:
        """Counts are incremental; a periodic exact count repairs any drift after a crash. Each
        pass also writes the hour's size-history point (the interval is well under an hour)."""
        pause = self.settings.reconcile_interval_s
        while True:
            await asyncio.sleep(pause)
            try:
                started = time.monotonic()
                await self.lifecycle.reconcile()
                # An exact count reads every membership (all of them decoded, on FerretDB): a
                # pass that took t seconds waits RECONCILE_SPACING times t before the next, yet at
                # most 50 minutes, so each hour still gets its history point.
                took = time.monotonic() - started
                log.info("reconcile.finished", took_s=round(took, 3))
                pause = min(max(self.settings.reconcile_interval_s, RECONCILE_SPACING * took), 3000)
                # Builds whose builder died are taken over once their lease ran out, and a
                # change this process missed (its consumer never positioned) is caught up.
                async with self.handlers.lock:
                    await self.lifecycle.load_all()
                    await self.lifecycle.resume_unfinished()
            except Exception as exc:
                log.warning("reconcile.failed", error=repr(exc))
            # On its own: a failure here must not hold up the rest of the pass, nor it them.
            try:
                await self.lifecycle.drop_unneeded_markers()
            except Exception as exc:
                log.warning("markers.not_dropped", error=repr(exc))

    async def run_lag_monitor(self, every_s: float = 5.0) -> None:
        """Publish consumer lag per partition of the user-events topic as a gauge."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        offsets = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        await offsets.start()
        try:
            partitions = [
                TopicPartition(Topic.USER_EVENTS, p) for p in range(PARTITIONS[Topic.USER_EVENTS])
            ]
            while True:
                try:
                    committed = await admin.list_consumer_group_offsets(
                        self.settings.consumer_group, partitions=partitions
                    )
                    ends = await offsets.end_offsets(partitions)
                    for tp in partitions:
                        meta = committed.get(tp)
                        done = meta.offset if meta is not None and meta.offset >= 0 else 0
                        CONSUMER_LAG.labels(partition=str(tp.partition)).set(ends[tp] - done)
                except KafkaError as exc:
                    log.warning("lag.unavailable", error=repr(exc))
                await asyncio.sleep(every_s)
        finally:
            await offsets.stop()
            await admin.close()

    async def readiness(self) -> dict[str, bool]:
        broker_ok = False
        try:
            broker_ok = bool(await asyncio.wait_for(self.broker.ping(timeout=2.0), 3.0))
        except Exception:
            broker_ok = False
        return {"store": await ping(self.client), "broker": broker_ok}
