"""Projects and API keys."""

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import ConfigDict, Field

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import json_example, no_content
from audience_api.routes.examples import tenancy as ex
from audience_api.schemas import Strict

router = APIRouter(prefix="/v1", tags=["tenancy"])


class ProjectCreate(Strict):
    name: str = Field(min_length=1, max_length=200)

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Web shop"}]}
    )


class RateLimit(Strict):
    per_second: float = Field(gt=0, le=100_000)
    burst: int = Field(ge=1, le=1_000_000)


class KeyCreate(Strict):
    project_id: str | None = None
    scope: Literal["admin", "read"] = "admin"
    name: str | None = Field(default=None, max_length=200)
    rate_limit: RateLimit | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "project_id": "prj_3f9a1c2b7d4e5f60",
                    "scope": "admin",
                    "name": "backend",
                    "rate_limit": {"per_second": 20, "burst": 40},
                }
            ]
        },
    )


@router.post("/projects", status_code=201, responses=json_example(ex.PROJECT, 201))
async def create_project(
    body: ProjectCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.tenancy.create_project(caller, body.name)


@router.get("/projects", responses=json_example(ex.PROJECTS))
async def list_projects(caller: PrincipalDep, services: ContainerDep) -> dict[str, Any]:
    return {"items": await services.tenancy.list_projects(caller)}


@router.post("/keys", status_code=201, responses=json_example(ex.CREATED_KEY, 201))
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


@router.get("/keys", responses=json_example(ex.KEYS))
async def list_keys(caller: PrincipalDep, services: ContainerDep) -> dict[str, Any]:
    return {"items": await services.tenancy.list_keys(caller)}


@router.delete(
    "/keys/{key_id}", status_code=204, responses=no_content("Revoked: the key stops working")
)
async def revoke_key(key_id: str, caller: PrincipalDep, services: ContainerDep) -> Response:
    await services.tenancy.revoke_key(caller, key_id)
    return Response(status_code=204)
