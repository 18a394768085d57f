"""The REST gateway's application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audience_api.admission import AdmissionLimit
from audience_api.config import Settings
from audience_api.container import Container
from audience_api.dashboard import install_dashboard
from audience_api.gzip_bodies import GzipRequestBodies
from audience_api.http_errors import install_error_handlers
from audience_api.metrics import RequestMetrics
from audience_api.rate_limit_headers import RateLimitHeaders
from audience_api.routes import (
    audiences,
    campaigns,
    datasets,
    health,
    ingest,
    insights,
    segment,
    tenancy,
)
from audience_api.routes import groups as group_routes
from audience_api.routes import sync as sync_routes
from audience_shared.asyncapi import build_asyncapi
from audience_shared.logging import configure_logging


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging("api", settings.log_level, settings.log_json)
    container = Container.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        structlog.get_logger().info("api.started", port=settings.port)
        yield
        await container.stop()

    app = FastAPI(
        title="Audiences API",
        version="0.1.0",
        description="Real-time audience segmentation: define audiences, send events, read members.",
        lifespan=lifespan,
    )
    app.state.container = container
    install_error_handlers(app, settings.max_body_bytes)
    # Added after the body-size limit so it runs before it: the limit then sees inflated sizes.
    app.add_middleware(GzipRequestBodies, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RateLimitHeaders)
    # Added last so it runs first: a refused request costs nothing else.
    app.add_middleware(AdmissionLimit, max_in_flight=settings.max_requests_in_flight)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    asyncapi_document = build_asyncapi()

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> dict[str, Any]:
        """The Kafka topics' contracts, as /openapi.json is the REST API's (no key needed)."""
        return asyncapi_document

    app.include_router(health.router)
    app.include_router(insights.router)
    # Before the audience routes: `/v1/audiences/groups/...` must not read as an audience id.
    app.include_router(group_routes.router)
    app.include_router(audiences.router)
    app.include_router(ingest.router)
    app.include_router(segment.router)
    app.include_router(sync_routes.router)
    app.include_router(datasets.router)
    app.include_router(tenancy.router)
    app.include_router(campaigns.router)
    install_dashboard(app, container)
    return app


def run() -> None:
    import uvicorn

    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_keep_alive=settings.keep_alive_s,
    )


if __name__ == "__main__":
    run()
