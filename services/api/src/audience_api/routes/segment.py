"""Segment/RudderStack-compatible tracking endpoints: /v1/batch and the single-message calls."""

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from audience_api.container import Container
from audience_api.errors import ApiError, InvalidRequest
from audience_api.metrics import EVENTS_ACCEPTED
from audience_api.routes.deps import ContainerDep, admit, presented_key
from audience_api.routes.examples import json_example
from audience_api.routes.examples import segment as ex
from audience_api.segment import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    MappedMessages,
    MessageType,
    error_body,
    map_messages,
)
from audience_api.services import Principal
from audience_shared.events import utcnow

log = structlog.get_logger()

router = APIRouter(prefix="/v1", tags=["segment"])

# The spec's single-message paths, and the one-letter paths analytics.js posts to (it takes
# `apiHost` to end in /v1 and appends the first letter of the call's type).
SINGLE_PATHS: dict[MessageType, tuple[str, ...]] = {
    "track": ("/track", "/t"),
    "page": ("/page", "/p"),
    "screen": ("/screen", "/s"),
    "group": ("/group", "/g"),
    "alias": ("/alias", "/a"),
    # /v1/identify itself is the native route, which hands spec-shaped bodies to
    # accept_spec_identify below.
    "identify": ("/i",),
}
BATCH_PATHS = ("/batch", "/b")

# Browsers post the spec from any origin, with the write key in the body or the Authorization
# header and never with cookies, so a wildcard origin exposes nothing.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}


class PayloadTooLarge(ApiError):
    """A request body over the spec's batch limit (the HTTP status belongs to this route alone)."""

    status = 413


_sent_at = TypeAdapter(datetime | None)
ACCEPTED_KIND = "SegmentMessage"


async def accept_spec_identify(
    caller: Principal, services: Container, body: dict[str, Any]
) -> JSONResponse:
    """A spec-shaped identify that reached the native /v1/identify route (already authenticated
    and parsed there)."""
    try:
        return await _accept(caller, services, body, "identify", utcnow())
    except ApiError as exc:
        return _error_response(exc)


async def _receive(
    request: Request, services: Container, message_type: MessageType | None
) -> JSONResponse:
    received = utcnow()
    try:
        body = await _json_body(request)
        caller = await _authenticate(request, services, body)
        return await _accept(caller, services, body, message_type, received)
    except ApiError as exc:
        return _error_response(exc)


async def _accept(
    caller: Principal,
    services: Container,
    body: dict[str, Any],
    message_type: MessageType | None,
    received: datetime,
) -> JSONResponse:
    project_id = caller.project_for(_text(body.get("project_id")))
    if message_type is None:
        mapped = _map_batch(body, project_id, received)
    else:
        message = {k: v for k, v in body.items() if k not in ("writeKey", "project_id")}
        mapped = map_messages(
            [message], project_id=project_id, received_at=received, message_type=message_type
        )
    accepted = await services.ingestion.accept(caller, mapped.events)
    EVENTS_ACCEPTED.labels(kind=ACCEPTED_KIND).inc(accepted)
    if not mapped.errors:
        return JSONResponse({"success": True}, headers=CORS_HEADERS)
    rejected = len(mapped.errors)
    log.info(
        "segment.messages_rejected",
        project_id=project_id,
        rejected=rejected,
        total=mapped.total,
        codes=sorted({error.code for error in mapped.errors}),
    )
    if message_type is not None:
        only = mapped.errors[0]
        raise InvalidRequest(only.code, only.message, [only.as_detail()])
    # A 400 tells the SDK not to retry; the messages that were valid are already accepted and a
    # retry of them would be deduplicated by messageId anyway.
    raise InvalidRequest(
        "invalid_messages",
        f"{rejected} of {mapped.total} messages were rejected; the others were accepted",
        [error.as_detail() for error in mapped.errors],
        accepted=mapped.total - rejected,
    )


def _map_batch(body: dict[str, Any], project_id: str, received: datetime) -> MappedMessages:
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise InvalidRequest(
            "invalid_batch", "batch must be a list of messages", [{"field": "batch"}]
        )
    context = body.get("context")
    integrations = body.get("integrations")
    try:
        sent_at = _sent_at.validate_python(body.get("sentAt"))
    except ValidationError as exc:
        raise InvalidRequest(
            "invalid_request", "sentAt must be an ISO-8601 time", [{"field": "sentAt"}]
        ) from exc
    return map_messages(
        batch,
        project_id=project_id,
        received_at=received,
        sent_at=sent_at,
        context=context if isinstance(context, dict) else None,
        integrations=integrations if isinstance(integrations, dict) else None,
    )


async def _json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, read with the batch bound whatever the Content-Length says.

    Parsed here rather than by FastAPI because analytics.js posts JSON as text/plain (so that
    browsers send it without a CORS preflight)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BATCH_BYTES:
            raise PayloadTooLarge(
                "payload_too_large",
                f"Batches are limited to {MAX_BATCH_BYTES} bytes and messages to "
                f"{MAX_MESSAGE_BYTES} bytes",
            )
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("invalid_json", f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_request", "The body must be a JSON object")
    return body


async def _authenticate(request: Request, services: Container, body: dict[str, Any]) -> Principal:
    """The write key from the Authorization header (Basic or Bearer), else from the body's
    `writeKey`, which is where analytics.js puts it."""
    key = presented_key(request.headers.get("authorization")) or _text(body.get("writeKey"))
    caller = await services.keys.authenticate(key)
    request.state.principal = caller
    admit(request, services, caller)
    return caller


def _error_response(exc: ApiError) -> JSONResponse:
    extra = dict(exc.extra)
    headers = dict(CORS_HEADERS)
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details, **extra),
        status_code=exc.status,
        headers=headers,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _endpoint(
    message_type: MessageType | None,
) -> Callable[[Request, ContainerDep], Awaitable[JSONResponse]]:
    async def endpoint(request: Request, services: ContainerDep) -> JSONResponse:
        return await _receive(request, services, message_type)

    return endpoint


async def _preflight(request: Request) -> Response:
    """Answer a browser's CORS preflight (RudderStack's JavaScript SDK sends an Authorization
    header, which needs one)."""
    requested = request.headers.get("access-control-request-headers")
    allowed = requested or "Authorization, Content-Type, Content-Encoding"
    return Response(
        status_code=204, headers={**CORS_HEADERS, "Access-Control-Allow-Headers": allowed}
    )


for _path in BATCH_PATHS:
    router.add_api_route(
        _path,
        _endpoint(None),
        methods=["POST"],
        summary="Segment-compatible batch",
        description="`{batch: [messages], sentAt?, context?, integrations?}`; 500 KB at most.",
        response_class=JSONResponse,
        responses=json_example(ex.ACCEPTED),
    )
for _type, _paths in SINGLE_PATHS.items():
    for _path in _paths:
        router.add_api_route(
            _path,
            _endpoint(_type),
            methods=["POST"],
            summary=f"Segment-compatible {_type}",
            include_in_schema=len(_path) > 2,
            response_class=JSONResponse,
            responses=json_example(ex.ACCEPTED),
        )
for _path in (*BATCH_PATHS, "/identify", *(p for paths in SINGLE_PATHS.values() for p in paths)):
    router.add_api_route(_path, _preflight, methods=["OPTIONS"], include_in_schema=False)
