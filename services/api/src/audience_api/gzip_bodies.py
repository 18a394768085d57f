"""ASGI middleware inflating `Content-Encoding: gzip` request bodies, never past a byte bound."""

import zlib

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audience_api.segment import error_body

# Accept a gzip stream with a gzip header only, which is what `Content-Encoding: gzip` promises.
GZIP_WBITS = zlib.MAX_WBITS | 16


class BodyRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class GzipRequestBodies:
    """Replace a gzip request body by its inflated bytes before any route reads it.

    Pure ASGI rather than BaseHTTPMiddleware, because it must swap the body stream. Inflation
    is incremental with an output cap, so a gzip bomb costs at most `max_bytes` of memory and
    is answered 413 as soon as it passes the cap. The inflated body gets a true Content-Length,
    so the body-size limit behind this middleware sees the real size.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding = Headers(scope=scope).get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            await self.app(scope, receive, send)
            return
        try:
            if encoding != "gzip":
                raise BodyRefused(
                    415, "unsupported_media_type", "Content-Encoding must be gzip or identity"
                )
            body = await self._inflate(receive)
        except BodyRefused as refused:
            response = JSONResponse(
                error_body(refused.code, refused.message), status_code=refused.status
            )
            await response(scope, receive, send)
            return
        except ConnectionAbortedError:
            return  # the client went away mid-body; there is no one to answer
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, _replay(body, receive), send)

    async def _inflate(self, receive: Receive) -> bytes:
        inflater = zlib.decompressobj(wbits=GZIP_WBITS)
        inflated = bytearray()
        received = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError
            chunk: bytes = message.get("body", b"")
            more_body = bool(message.get("more_body", False))
            received += len(chunk)
            if received > self.max_bytes:
                raise self._too_large()
            if inflater.eof:
                if chunk:
                    raise BodyRefused(400, "invalid_encoding", "Data follows the end of the gzip")
                continue
            try:
                # One byte over the cap is enough to know the body is too large.
                inflated += inflater.decompress(chunk, self.max_bytes + 1 - len(inflated))
            except zlib.error as exc:
                raise BodyRefused(
                    400, "invalid_encoding", f"The body is not valid gzip: {exc}"
                ) from exc
            if len(inflated) > self.max_bytes:
                raise self._too_large()
            if inflater.unused_data:
                raise BodyRefused(400, "invalid_encoding", "Data follows the end of the gzip")
        if not inflater.eof:
            raise BodyRefused(400, "invalid_encoding", "The gzip body is truncated")
        return bytes(inflated)

    def _too_large(self) -> BodyRefused:
        return BodyRefused(
            413,
            "payload_too_large",
            f"Request bodies are limited to {self.max_bytes} bytes after decompression",
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields the inflated body once, then defers to the real one (so a
    later disconnect is still seen)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
