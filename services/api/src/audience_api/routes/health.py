"""Liveness and readiness probes."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from audience_api.routes.deps import ContainerDep
from audience_api.routes.examples import health as ex
from audience_api.routes.examples import json_example

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=json_example(ex.HEALTHY))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=json_example(ex.READY))
async def readyz(services: ContainerDep) -> JSONResponse:
    checks = await services.readiness()
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
