"""Audience definitions, counts and status."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.schemas import AudienceCreate

router = APIRouter(prefix="/v1/audiences", tags=["audiences"])


@router.post("", status_code=201)
async def create_audience(
    body: AudienceCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.audiences.create(caller, body.model_dump(exclude_none=True))


@router.get("")
async def list_audiences(
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    first: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    items, has_next = await services.audiences.list(caller, project_id, first, after)
    return {
        "items": items,
        "page_info": {
            "has_next_page": has_next,
            "end_cursor": items[-1]["id"] if items else None,
        },
    }


@router.get("/{audience_id}")
async def get_audience(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.audiences.get(caller, audience_id, project_id)


@router.get("/{audience_id}/count")
async def count_members(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.audiences.count(caller, audience_id, project_id)
