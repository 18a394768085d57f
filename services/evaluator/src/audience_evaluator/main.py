"""The evaluator's application factory: consumers, the sweeper and health endpoints."""

import asyncio
import contextlib
import gc
from datetime import timedelta

import structlog
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import Scope
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audience_evaluator.config import Settings
from audience_evaluator.container import Container
from audience_evaluator.metrics import time_gc_pauses
from audience_shared.clock import make_clock
from audience_shared.logging import configure_logging

log = structlog.get_logger()


def create_app(settings: Settings | None = None) -> AsgiFastStream:
    settings = settings or Settings()
    configure_logging("evaluator", settings.log_level, settings.log_json)
    gc.set_threshold(*settings.gc_thresholds)
    time_gc_pauses()
    container = Container.build(settings, clock=make_clock(settings.clock_offset_file))
    background: list[asyncio.Task[None]] = []

    @get
    async def healthz(scope: Scope) -> AsgiResponse:
        return AsgiResponse(b'{"status": "ok"}', status_code=200)

    @get
    async def readyz(scope: Scope) -> AsgiResponse:
        checks = await container.readiness()
        body = ('{"status": "%s"}' % ("ready" if all(checks.values()) else "not_ready")).encode()
        return AsgiResponse(body, status_code=200 if all(checks.values()) else 503)

    @get
    async def metrics(scope: Scope) -> AsgiResponse:
        return AsgiResponse(
            generate_latest(), status_code=200, headers={"content-type": CONTENT_TYPE_LATEST}
        )

    async def on_startup() -> None:
        await container.prepare()

    async def after_startup() -> None:
        background.append(asyncio.create_task(container.run_sweeper()))
        background.append(asyncio.create_task(container.run_reconciler()))
        background.append(asyncio.create_task(container.resume_builds()))
        background.append(asyncio.create_task(container.run_lag_monitor()))
        log.info("evaluator.started", port=settings.port)

    async def on_shutdown() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # What was processed is committed, so a restart does not process it again.
        await container.handlers.offsets.stop()
        # Delivered outboxes left in profiles would be replayed by whoever touches them next.
        try:
            await container.memberships.clear_delivered(older_than=timedelta(0))
        except Exception as exc:
            log.warning("outboxes.not_cleared", error=repr(exc))
        await container.publisher.stop()

    return AsgiFastStream(
        container.broker,
        asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)],
        on_startup=[on_startup],
        after_startup=[after_startup],
        on_shutdown=[on_shutdown],
        logger=None,
    )


def run() -> None:
    import uvicorn

    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    run()
