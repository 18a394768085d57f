"""Lists in and out: Klaviyo integration and import, sync triggers, CSV imports, unloads."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import json_example, no_content
from audience_api.routes.examples import sync as ex
from audience_api.routes.uploads import receive_csv

router = APIRouter(prefix="/v1", tags=["sync"])

MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KlaviyoConnect(Strict):
    project_id: str | None = None
    # Printable ASCII only: it goes into an HTTP header, where anything else cannot be encoded.
    api_key: str = Field(min_length=8, max_length=200, pattern=r"^[!-~]+$")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"api_key": "pk_3d1f0c2b8e7a9f2c"}]}
    )


class KlaviyoImport(Strict):
    project_id: str | None = None
    list_ids: list[str] | None = Field(
        default=None, max_length=100, description="Default: every list of the Klaviyo account"
    )

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"list_ids": ["Xy7kQ2", "Rt5mP9"]}]}
    )


class SyncTrigger(Strict):
    project_id: str | None = None
    mode: Literal["full", "incremental"] = "full"

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"mode": "incremental"}]}
    )


class ExportCreate(Strict):
    project_id: str | None = None
    format: Literal["csv", "jsonl"] = "csv"
    columns: list[str] | str | None = Field(
        default=None, description="Column projection: a list, or a comma-separated clause"
    )
    include_traits: bool = False

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"format": "csv", "columns": ["user_id", "email"]}]},
    )


@router.post("/integrations/klaviyo", status_code=201, responses=json_example(ex.KLAVIYO, 201))
async def connect_klaviyo(
    body: KlaviyoConnect, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.integrations.connect_klaviyo(caller, body.project_id, body.api_key)


@router.get("/integrations/klaviyo", responses=json_example(ex.KLAVIYO))
async def get_klaviyo(
    caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.integrations.get_klaviyo(caller, project_id)


@router.delete(
    "/integrations/klaviyo",
    status_code=204,
    responses=no_content("Disconnected: the stored Klaviyo key is deleted"),
)
async def delete_klaviyo(
    caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> Response:
    await services.integrations.delete_klaviyo(caller, project_id)
    return Response(status_code=204)


@router.post(
    "/audiences/import/klaviyo", status_code=201, responses=json_example(ex.IMPORTED_LISTS, 201)
)
async def import_klaviyo_lists(
    caller: PrincipalDep, services: ContainerDep, body: KlaviyoImport | None = None
) -> dict[str, Any]:
    body = body or KlaviyoImport()
    items = await services.integrations.import_klaviyo_lists(caller, body.project_id, body.list_ids)
    return {"items": items}


@router.post(
    "/audiences/{audience_id}/sync", status_code=202, responses=json_example(ex.SYNC_STARTED, 202)
)
async def trigger_sync(
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    body: Annotated[SyncTrigger | None, Body()] = None,
) -> dict[str, Any]:
    body = body or SyncTrigger()
    return await services.integrations.trigger_sync(
        caller, audience_id, body.project_id or project_id, body.mode
    )


@router.get("/audiences/{audience_id}/sync", responses=json_example(ex.SYNC_STATUS))
async def sync_status(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.integrations.sync_status(caller, audience_id, project_id, None)


@router.get("/audiences/{audience_id}/syncs/{run_id}", responses=json_example(ex.SYNC_STATUS))
async def sync_run_status(
    audience_id: str,
    run_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
) -> dict[str, Any]:
    return await services.integrations.sync_status(caller, audience_id, project_id, run_id)


@router.post(
    "/audiences/{audience_id}/import",
    status_code=202,
    responses=json_example(ex.IMPORT_STARTED, 202),
)
async def import_csv(
    audience_id: str,
    request: Request,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
) -> dict[str, Any]:
    """A CSV as a multipart `file` part or as a `text/csv` body; streamed to disk, never held."""
    return await receive_csv(
        request,
        project_id,
        lambda project, chunks: services.integrations.start_import(
            caller, audience_id, project, chunks
        ),
    )


@router.get(
    "/audiences/{audience_id}/imports/{import_id}", responses=json_example(ex.IMPORT_STATUS)
)
async def import_status(
    audience_id: str,
    import_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
) -> dict[str, Any]:
    return await services.integrations.import_status(caller, audience_id, import_id, project_id)


@router.post(
    "/audiences/{audience_id}/export",
    status_code=202,
    responses=json_example(ex.EXPORT_STARTED, 202),
)
async def start_export(
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    body: Annotated[ExportCreate | None, Body()] = None,
) -> dict[str, Any]:
    body = body or ExportCreate()
    return await services.integrations.start_export(
        caller,
        audience_id,
        body.project_id or project_id,
        body.format,
        body.columns,
        body.include_traits,
    )


@router.get("/audiences/{audience_id}/export", responses=json_example(ex.EXPORT_STATUS))
async def latest_export(
    audience_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    """The audience's latest unload, whoever started it (a request, `mode: unload`, a schedule)."""
    return await services.integrations.latest_export(caller, audience_id, project_id)


@router.get("/exports/{export_id}", responses=json_example(ex.EXPORT_STATUS))
async def export_status(
    export_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.integrations.export_status(caller, export_id)


@router.get(
    "/exports/{export_id}/download",
    responses={200: {"content": {"text/csv": {"example": ex.EXPORT_FILE}}}},
)
async def download_export(
    export_id: str, caller: PrincipalDep, services: ContainerDep
) -> FileResponse:
    path, fmt = await services.integrations.export_file(caller, export_id)
    return FileResponse(path, media_type=MEDIA_TYPES[fmt], filename=path.name)
