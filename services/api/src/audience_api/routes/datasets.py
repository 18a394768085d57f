"""Datasets (seed 001 `type: dataset`): CSV imports of records keyed by user, and their status."""

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from audience_api.errors import InvalidRequest
from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import datasets as ex
from audience_api.routes.examples import json_example
from audience_api.routes.sync import CSV_TYPES, UPLOAD_CHUNK, UnsupportedMediaType

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


@router.post("/{name}/import", status_code=202, responses=json_example(ex.IMPORT_STARTED, 202))
async def import_dataset(
    name: str,
    request: Request,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    key: Annotated[
        Literal["user_id", "external_id", "email"] | None,
        Query(description="The column naming the user (default: the first of these present)"),
    ] = None,
) -> dict[str, Any]:
    """A CSV with a header row, as a multipart `file` part or a `text/csv` body; one column
    keys each row to a user, every other column is a field (`dataset.<name>.<field>` in rules).
    Rows are imported in the background: poll the import's status for counts and bad rows."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        # Starlette spools file parts to disk past 1 MB, so memory stays bounded.
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("file_required", "Send the CSV as a multipart part `file`")
            named = form.get("project_id")
            project = project_id or (named if isinstance(named, str) else None)
            return await services.datasets.start_import(
                caller, name, project, key, _file_chunks(upload)
            )
    if content_type.startswith(CSV_TYPES):
        return await services.datasets.start_import(caller, name, project_id, key, request.stream())
    raise UnsupportedMediaType(
        "unsupported_media_type", "Send multipart/form-data with a `file` part, or text/csv"
    )


@router.get("/{name}/imports/{import_id}", responses=json_example(ex.IMPORT_STATUS))
async def dataset_import_status(
    name: str,
    import_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
) -> dict[str, Any]:
    """Counts, progress and up to 100 bad rows (`{"row", "message"}`; a row whose key matches
    no known user says "unknown user")."""
    return await services.datasets.import_status(caller, name, import_id, project_id)


@router.get("", responses=json_example(ex.DATASETS))
async def list_datasets(
    caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return {"items": await services.datasets.list(caller, project_id)}


@router.get("/{name}", responses=json_example(ex.DATASET))
async def get_dataset(
    name: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.datasets.get(caller, name, project_id)
