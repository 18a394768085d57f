"""HTTP client of the gateway: the one place that turns a failed call into a `CliError`."""

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from audience_cli.errors import CliError

DOWNLOAD_CHUNK = 1 << 16


def failure_from(response: httpx.Response) -> CliError:
    """The API's `{"error": {"code", "message", "details"}}`, or the bare status otherwise."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return CliError(
            error["code"], str(error.get("message", "")), error.get("details"), response.status_code
        )
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return CliError(
        f"http_{response.status_code}",
        text or response.reason_phrase or "request failed",
        status=response.status_code,
    )


class ApiClient:
    """The gateway at `url`, authenticated with `key`; `project` scopes organization keys."""

    def __init__(
        self,
        url: str,
        key: str | None,
        project: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30,
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.project = project
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: Iterable[bytes] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON body (None for 204) or a `CliError`."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if self.project is not None:
            query.setdefault("project_id", self.project)
        try:
            response = self._http.request(
                method, path, json=json, params=query, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise failure_from(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                "invalid_response", f"{method} {path} did not answer JSON", status=200
            ) from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=params)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def upload_csv(
        self, path: str, file: Path, on_bytes: Callable[[int], None] | None = None
    ) -> Any:
        """Stream a CSV as a `text/csv` body, reporting each chunk sent (never held in memory)."""

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as handle:
                while chunk := handle.read(DOWNLOAD_CHUNK):
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    yield chunk

        return self.request(
            "POST",
            path,
            content=chunks(),
            headers={"content-type": "text/csv", "content-length": str(file.stat().st_size)},
        )

    def download(
        self,
        path: str,
        destination: Path,
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Stream a file to `destination` (via a `.part` file); returns the bytes written."""
        partial = destination.with_name(destination.name + ".part")
        written = 0
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise failure_from(response)
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                        handle.write(chunk)
                        written += len(chunk)
                        if on_bytes is not None:
                            on_bytes(written, total)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise self._unreachable(exc) from exc
        except CliError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(destination)
        return written

    def _unreachable(self, exc: httpx.HTTPError) -> CliError:
        return CliError(
            "unreachable",
            f"cannot reach {self.url} ({type(exc).__name__}: {exc}); is it up? (audience status)",
        )
