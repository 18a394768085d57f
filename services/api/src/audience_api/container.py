"""The gateway's composition root: the only place that picks adapters."""

from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from audience_api.adapters.campaign_store import MongoCampaignStore
from audience_api.adapters.datasets import MongoDatasetRecords
from audience_api.adapters.groups import MongoGroupRepository
from audience_api.adapters.kafka_publisher import KafkaEventPublisher
from audience_api.adapters.mongo import (
    MongoAudienceRepository,
    MongoKeyRepository,
    MongoProfileReader,
    MongoStore,
    MongoTenancyRepository,
)
from audience_api.adapters.sync_store import (
    FernetKeyCipher,
    HttpKlaviyoLists,
    KafkaCommandPublisher,
    MongoSyncRecords,
    TransferFiles,
)
from audience_api.campaigns import CampaignService
from audience_api.config import Settings
from audience_api.cursors import CursorCodec
from audience_api.datasets import DatasetService
from audience_api.groups import GroupService
from audience_api.integrations import IntegrationService
from audience_api.rate_limit import RateLimit, TokenBuckets
from audience_api.segments import SegmentService
from audience_api.services import (
    AudienceService,
    IngestionService,
    InsightService,
    KeyService,
    TenancyService,
)
from audience_shared.clock import make_clock
from audience_shared.kafka import ensure_topics, make_broker
from audience_shared.store import connect_store, ping

BOOTSTRAP_ORGANIZATION = "org_demo"


@dataclass
class Container:
    settings: Settings
    client: AsyncMongoClient[dict[str, Any]]
    broker: KafkaBroker
    store: MongoStore
    publisher: KafkaEventPublisher
    keys: KeyService
    audiences: AudienceService
    ingestion: IngestionService
    tenancy_repo: MongoTenancyRepository
    tenancy: TenancyService
    cursors: CursorCodec
    insights: InsightService
    sync_records: MongoSyncRecords
    integrations: IntegrationService
    campaigns: CampaignService
    rate_limits: TokenBuckets
    groups: GroupService
    segments: SegmentService
    datasets: DatasetService

    @classmethod
    def build(cls, settings: Settings) -> "Container":
        client = connect_store(settings.mongo_url)
        broker = make_broker(settings.kafka_bootstrap, client_id="audiences-api")
        store = MongoStore(client, settings.mongo_database)
        publisher = KafkaEventPublisher(broker)
        keys = MongoKeyRepository(store)
        audience_repo = MongoAudienceRepository(store)
        profile_reader = MongoProfileReader(store)
        commands = KafkaCommandPublisher(broker)
        files = TransferFiles(settings.imports_dir, settings.exports_dir, settings.max_upload_bytes)
        datasets = DatasetService(MongoDatasetRecords(store), commands, files)
        audiences = AudienceService(
            audience_repo, publisher, profile_reader, settings.create_wait_seconds, datasets
        )
        group_repo = MongoGroupRepository(store)
        sync_records = MongoSyncRecords(store)
        tenancy_repo = MongoTenancyRepository(store)
        return cls(
            settings=settings,
            client=client,
            broker=broker,
            store=store,
            publisher=publisher,
            keys=KeyService(keys),
            audiences=audiences,
            sync_records=sync_records,
            integrations=IntegrationService(
                sync_records,
                commands,
                publisher,
                audiences,
                FernetKeyCipher(settings.secret_key.get_secret_value()),
                HttpKlaviyoLists(settings.klaviyo_base_url, settings.klaviyo_revision),
                files,
            ),
            datasets=datasets,
            insights=InsightService(profile_reader, audience_repo),
            ingestion=IngestionService(publisher),
            tenancy_repo=tenancy_repo,
            tenancy=TenancyService(tenancy_repo, keys),
            cursors=CursorCodec(settings.secret_key.get_secret_value().encode()),
            campaigns=CampaignService(
                MongoCampaignStore(store),
                tenancy_repo,
                make_clock(settings.clock_offset_file),
                settings.conversion_event,
            ),
            groups=GroupService(group_repo, audiences),
            segments=SegmentService(group_repo, audiences),
            rate_limits=TokenBuckets(
                RateLimit(settings.rate_limit_per_second, settings.rate_limit_burst)
            ),
        )

    async def start(self) -> None:
        await ensure_topics(self.settings.kafka_bootstrap)
        await self.broker.connect()
        await self.store.ensure_schema()
        if self.settings.bootstrap_api_key is not None:
            await self.tenancy_repo.ensure_organization(BOOTSTRAP_ORGANIZATION, "Demo")
            await self.keys.install_key(
                self.settings.bootstrap_api_key.get_secret_value(),
                BOOTSTRAP_ORGANIZATION,
                None,
                "admin",
                "bootstrap",
            )

    async def stop(self) -> None:
        await self.broker.stop()
        await self.client.close()

    async def readiness(self) -> dict[str, bool]:
        return {"store": await ping(self.client), "broker": await self.publisher.is_ready()}
