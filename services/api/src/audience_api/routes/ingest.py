"""Native ingestion: identify (traits) and events (track), one or a batch of up to 1,000."""

from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from audience_api.errors import InvalidRequest
from audience_api.metrics import EVENTS_ACCEPTED
from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import ingest as ex
from audience_api.routes.examples import json_example
from audience_api.routes.segment import accept_spec_identify
from audience_api.schemas import IdentifyItem, IngestAccepted, TrackItem
from audience_api.segment import is_spec_message
from audience_shared.events import EventTracked, TraitsIdentified, UserEventBase, utcnow

router = APIRouter(prefix="/v1", tags=["ingestion"])

MAX_BATCH = 1000


def _split(body: Any) -> tuple[list[Any], str | None, bool]:
    """The items of a single or batch body, the project named in it, and whether it was a batch."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_request", "The body must be a JSON object")
    project = body.get("project_id") or body.get("app_id")
    if "batch" in body:
        batch = body["batch"]
        if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH:
            raise InvalidRequest(
                "invalid_batch",
                f"batch must be a list of 1 to {MAX_BATCH} items",
                {"field": "batch"},
            )
        return batch, project, True
    item = {k: v for k, v in body.items() if k not in ("project_id", "app_id")}
    return [item], project, False


def _errors(index: int, exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "code": "invalid_item",
            "field": ".".join(str(part) for part in err["loc"]),
            "message": err["msg"],
        }
        for err in exc.errors()
    ]


async def _ingest(
    body: Any, caller: Any, services: ContainerDep, build: Any, item_model: Any
) -> JSONResponse:
    items, project, is_batch = _split(body)
    project_id = caller.project_for(project)
    received = utcnow()
    events: list[UserEventBase] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            item = item_model.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_errors(index, exc))
            continue
        events.append(build(item, project_id, received))
    if errors and not is_batch:
        raise InvalidRequest("invalid_request", "The request body is invalid", errors)
    accepted = await services.ingestion.accept(caller, events)
    EVENTS_ACCEPTED.labels(kind=item_model.__name__).inc(accepted)
    return JSONResponse(
        IngestAccepted(accepted=accepted, errors=errors).model_dump(), status_code=202
    )


def _identify(item: IdentifyItem, project_id: str, received: Any) -> UserEventBase:
    extra = {"event_id": item.event_id} if item.event_id else {}
    return TraitsIdentified(
        project_id=project_id,
        user_id=item.user_id,
        traits=item.traits,
        timestamp=item.timestamp or received,
        received_at=received,
        **extra,
    )


def _track(item: TrackItem, project_id: str, received: Any) -> UserEventBase:
    extra = {"event_id": item.event_id} if item.event_id else {}
    return EventTracked(
        project_id=project_id,
        user_id=item.user_id,
        event=item.event,
        properties=item.properties,
        timestamp=item.timestamp or received,
        received_at=received,
        **extra,
    )


@router.post(
    "/identify",
    status_code=202,
    response_model=IngestAccepted,
    responses=json_example(ex.ACCEPTED, 202),
)
async def identify(
    caller: PrincipalDep,
    services: ContainerDep,
    body: Any = Body(examples=[ex.IDENTIFY]),  # noqa: B008
) -> JSONResponse:
    # Segment-style SDKs post their camelCase identify here too; one path serves both shapes.
    if is_spec_message(body):
        return await accept_spec_identify(caller, services, body)
    return await _ingest(body, caller, services, _identify, IdentifyItem)


@router.post(
    "/events",
    status_code=202,
    response_model=IngestAccepted,
    responses=json_example(ex.ACCEPTED, 202),
)
async def track(
    caller: PrincipalDep,
    services: ContainerDep,
    body: Any = Body(examples=[ex.EVENT, ex.EVENT_BATCH]),  # noqa: B008
) -> JSONResponse:
    return await _ingest(body, caller, services, _track, TrackItem)
