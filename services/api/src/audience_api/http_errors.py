"""One error shape for every failure: {"error": {"code", "message", "details"}}."""

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from audience_api.errors import ApiError
from audience_shared.rules import RuleError

log = structlog.get_logger()

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "details": details, **extra}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        details.append({"field": ".".join(loc), "message": err.get("msg"), "type": err.get("type")})
    return details


class BodySizeLimit(BaseHTTPMiddleware):
    """Refuse bodies over the limit before anything reads them."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method == "POST" and request.url.path.endswith("/import"):
            return await call_next(request)  # CSV uploads stream to disk under max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return self._too_large()
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            # A chunked body states no length: count it as it arrives, stop past the limit.
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_bytes:
                    return self._too_large()
            # Starlette hands a body cached here to the endpoint (see _CachedRequest).
            request._body = bytes(body)
        return await call_next(request)

    def _too_large(self) -> JSONResponse:
        return error_response(
            413, "payload_too_large", f"Request bodies are limited to {self.max_bytes} bytes"
        )


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {}
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra.pop("retry_after"))
        return error_response(exc.status, exc.code, exc.message, exc.details, headers, **exc.extra)

    @app.exception_handler(RuleError)
    async def on_rule_error(request: Request, exc: RuleError) -> JSONResponse:
        extra: dict[str, Any] = {}
        if exc.position is not None:
            extra["position"] = exc.position
        if exc.expected:
            extra["expected"] = list(exc.expected)
        return error_response(400, exc.code, exc.message, exc.details, **extra)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        unknown = [d["field"] for d in details if d["type"] == "extra_forbidden"]
        if unknown:
            return error_response(
                400, "unknown_fields", f"Unknown fields: {', '.join(unknown)}", details
            )
        return error_response(400, "invalid_request", "The request is invalid", details)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.failed", path=request.url.path)
        return error_response(500, "internal_error", "Something went wrong on our side")
