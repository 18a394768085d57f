"""Audience definitions, counts and status."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from audience_api.errors import Conflict
from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import audiences as ex
from audience_api.routes.examples import json_example, no_content
from audience_api.schemas import AudienceCreate, AudienceUpdate
from audience_api.services import AudienceFilters, parse_include

router = APIRouter(prefix="/v1/audiences", tags=["audiences"])


@router.post("", status_code=201, responses=json_example(ex.AUDIENCE, 201))
async def create_audience(
    body: AudienceCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.audiences.create(caller, body.model_dump(exclude_none=True))


IncludeQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Relations to add, comma-separated: rules, imports, sync_source",
        examples=["rules,imports"],
    ),
]


@router.get("", responses=json_example(ex.AUDIENCE_PAGE))
async def list_audiences(
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    first: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    include: IncludeQuery = None,
    kind: Literal["dynamic", "static", "synced"] | None = None,
    status: Annotated[
        Literal["pending", "building", "ready", "syncing", "failed"] | None,
        Query(description="Archived audiences are never listed"),
    ] = None,
    search: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Name contains, any case")
    ] = None,
) -> dict[str, Any]:
    filters = AudienceFilters(
        kind=kind, status=status, search=search, include=parse_include(include)
    )
    position = services.cursors.decode(after)["id"] if after else None
    items, has_next = await services.audiences.page(caller, project_id, first, position, filters)
    end = services.cursors.encode({"id": items[-1]["id"]}) if items else None
    return {"items": items, "page_info": {"has_next_page": has_next, "end_cursor": end}}


@router.get("/{audience_id}", responses=json_example(ex.AUDIENCE_WITH_RELATIONS))
async def get_audience(
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    include: IncludeQuery = None,
) -> dict[str, Any]:
    return await services.audiences.get(caller, audience_id, project_id, parse_include(include))


@router.get("/{audience_id}/count", responses=json_example(ex.COUNT))
async def count_members(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.audiences.count(caller, audience_id, project_id)


@router.put("/{audience_id}", responses=json_example(ex.UPDATED_AUDIENCE))
async def update_audience(
    audience_id: str, body: AudienceUpdate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.audiences.update(caller, audience_id, body.model_dump(exclude_none=True))


@router.delete(
    "/{audience_id}",
    status_code=204,
    responses=no_content("Archived: gone from lists, and every member exited"),
)
async def delete_audience(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> Response:
    await services.audiences.delete(caller, audience_id, project_id)
    return Response(status_code=204)


@router.get("/{audience_id}/status", responses=json_example(ex.STATUS))
async def audience_status(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.audiences.status(caller, audience_id, project_id)


@router.get("/{audience_id}/members", responses=json_example(ex.MEMBERS))
async def list_members(
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    first: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    position = services.cursors.decode(after)["user_id"] if after else None
    items, has_next = await services.audiences.members(
        caller, audience_id, project_id, first, position, search
    )
    end = services.cursors.encode({"user_id": items[-1]["user_id"]}) if items else None
    return {"items": items, "page_info": {"has_next_page": has_next, "end_cursor": end}}


@router.get("/{audience_id}/history", responses=json_example(ex.HISTORY))
async def audience_history(
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    since: Annotated[
        datetime | None,
        Query(description="Points at or after this time (default a week back, at most a year)"),
    ] = None,
) -> list[dict[str, Any]]:
    """Hourly size points: the count, and the users who entered and exited in that hour."""
    return await services.audiences.history(caller, audience_id, project_id, since)


@router.post("/{audience_id}/refresh", status_code=202, responses=json_example(ex.REFRESH, 202))
async def refresh_audience(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    """Rebuild a rule or list audience now; for a synced list, pull it from its source."""
    caller.require_write()
    if await services.audiences.kind_of(caller, audience_id, project_id) == "synced":
        try:
            run = await services.integrations.trigger_sync(caller, audience_id, project_id)
        except Conflict as exc:
            raise Conflict("refresh_in_progress", exc.message, exc.details) from exc
        return {"audience_id": audience_id, "status": "syncing", "run_id": run["run_id"]}
    return await services.audiences.refresh(caller, audience_id, project_id)
