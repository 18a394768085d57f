"""Datasets (seed 001 `type: dataset`): CSV imports of records keyed by user, and their status."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import datasets as ex
from audience_api.routes.examples import json_example
from audience_api.routes.uploads import receive_csv

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


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
    return await receive_csv(
        request,
        project_id,
        lambda project, chunks: services.datasets.start_import(caller, name, project, key, chunks),
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
