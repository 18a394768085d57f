"""The ops dashboard: static pages at /dashboard and the JSON they read under /v1/ops."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from audience_api.adapters.ops_probes import HttpHealthProbe, KafkaBrokerOffsets, MongoRunRecords
from audience_api.container import Container
from audience_api.ops import PipelineService, RunHistoryService
from audience_api.routes import ops

STATIC = Path(__file__).parent / "static"


def install_dashboard(app: FastAPI, container: Container) -> None:
    """Wire the dashboard's services and mount its files. It keeps its own small composition
    here so the gateway's container stays about the REST API proper."""
    settings = container.settings
    app.state.ops = ops.OpsServices(
        pipeline=PipelineService(
            KafkaBrokerOffsets(settings.kafka_bootstrap),
            HttpHealthProbe(),
            container.readiness,
            settings.consumer_group,
            {"evaluator": settings.evaluator_url, "sync": settings.sync_url},
        ),
        runs=RunHistoryService(MongoRunRecords(container.store)),
    )
    app.include_router(ops.router)
    app.mount("/dashboard", StaticFiles(directory=STATIC, html=True), name="dashboard")
