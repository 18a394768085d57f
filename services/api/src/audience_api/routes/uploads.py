"""CSV uploads: a multipart `file` part or a `text/csv` body, streamed, never held in memory."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from audience_api.errors import ApiError, InvalidRequest

UPLOAD_CHUNK = 1 << 20
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/octet-stream")

# Starts an import of a streamed file for a project (None: the caller's own).
StartImport = Callable[[str | None, AsyncIterator[bytes]], Awaitable[dict[str, Any]]]


class UnsupportedMediaType(ApiError):
    status = 415


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


async def receive_csv(
    request: Request, project_id: str | None, start: StartImport
) -> dict[str, Any]:
    """Hand the uploaded CSV to `start` as a byte stream, whichever way it was sent."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        # Starlette spools file parts to disk past 1 MB, so memory stays bounded.
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("file_required", "Send the CSV as a multipart part `file`")
            named = form.get("project_id")
            project = project_id or (named if isinstance(named, str) else None)
            return await start(project, _file_chunks(upload))
    if content_type.startswith(CSV_TYPES):
        return await start(project_id, request.stream())
    raise UnsupportedMediaType(
        "unsupported_media_type", "Send multipart/form-data with a `file` part, or text/csv"
    )
