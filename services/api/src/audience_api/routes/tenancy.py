"""Projects and API keys."""

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import Field

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.schemas import Strict

router = APIRouter(prefix="/v1", tags=["tenancy"])


class ProjectCreate(Strict):
    name: str = Field(min_length=1, max_length=200)


class RateLimit(Strict):
    per_second: float = Field(gt=0, le=100_000)
    burst: int = Field(ge=1, le=1_000_000)


class KeyCreate(Strict):
    project_id: str | None = None
    scope: Literal["admin", "read"] = "admin"
    name: str | None = Field(default=None, max_length=200)
    rate_limit: RateLimit | None = None


@router.post("/projects", status_code=201)
async def create_project(
    body: ProjectCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.tenancy.create_project(caller, body.name)


@router.get("/projects")
async def list_projects(caller: PrincipalDep, services: ContainerDep) -> dict[str, Any]:
    return {"items": await services.tenancy.list_projects(caller)}


@router.post("/keys", status_code=201)
async def create_key(
    body: KeyCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.tenancy.create_key(
        caller,
        body.project_id,
        body.scope,
        body.name,
        body.rate_limit.model_dump() if body.rate_limit else None,
    )


@router.get("/keys")
async def list_keys(caller: PrincipalDep, services: ContainerDep) -> dict[str, Any]:
    return {"items": await services.tenancy.list_keys(caller)}


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: str, caller: PrincipalDep, services: ContainerDep) -> Response:
    await services.tenancy.revoke_key(caller, key_id)
    return Response(status_code=204)
