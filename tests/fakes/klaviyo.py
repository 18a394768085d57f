"""A faithful fake of Klaviyo's JSON:API for lists, run as a real HTTP server on loopback.

What it reproduces, because the sync service depends on each: JSON:API documents with
`data`/`links`, lists paged by 10, list profiles paged by `page[size]` (1-100, default 20) with
opaque `page[cursor]` values in `links.next`, the `joined_group_at` filters and sort, a required
`revision` header and `Klaviyo-API-Key` authorization, 429 with `Retry-After` once a request
budget per window is spent, and 5xx failures injected on demand. Every request is logged so tests
can assert pacing and resumption.
"""

import base64
import json
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JSONAPI = "application/vnd.api+json"
LISTS_PAGE_SIZE = 10
_FILTER = re.compile(
    r"^(greater-than|greater-or-equal|less-than|less-or-equal)\(joined_group_at,([^)]+)\)$"
)


@dataclass
class LoggedRequest:
    at: float
    path: str
    query: dict[str, str]
    status: int
    retry_after: float | None = None


@dataclass
class Membership:
    profile_id: str
    joined_group_at: datetime


@dataclass
class FakeKlaviyo:
    """State of the fake account; mutate it from tests while the server runs."""

    api_keys: set[str] = field(default_factory=lambda: {"pk_test_fake_key_1234"})
    # Requests allowed per window before 429s (None: unlimited), like the documented steady limit.
    budget: int | None = None
    window_s: float = 1.0
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[Membership]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[LoggedRequest] = field(default_factory=list)
    _failures: list[tuple[str, int, int, float | None]] = field(default_factory=list)
    _recent: list[float] = field(default_factory=list)
    # Re-entrant: a handler answering under the lock logs the answer, which takes it again (a
    # plain Lock deadlocked the server's only thread on the first 404).
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: int = 0
    base_url: str = ""

    # ---- test controls -------------------------------------------------------------------

    def add_list(self, name: str) -> str:
        with self._lock:
            self._ids += 1
            list_id = f"L{self._ids:05d}"
            now = _iso(datetime.now(UTC))
            self.lists[list_id] = {
                "name": name,
                "created": now,
                "updated": now,
                "opt_in_process": "single_opt_in",
            }
            self.members[list_id] = []
            return list_id

    def add_profiles(
        self, list_id: str, profiles: list[dict[str, Any]], joined_at: datetime | None = None
    ) -> list[str]:
        """Create profiles (attributes as Klaviyo names them) and add them to the list."""
        ids = []
        with self._lock:
            base = joined_at or datetime.now(UTC)
            for offset, attributes in enumerate(profiles):
                self._ids += 1
                profile_id = attributes.pop("id", None) or f"01KP{self._ids:022d}"
                self.profiles[profile_id] = {
                    "email": None,
                    "phone_number": None,
                    "external_id": None,
                    "first_name": None,
                    "last_name": None,
                    "properties": {},
                    **attributes,
                }
                self.members[list_id].append(
                    Membership(profile_id, base + timedelta(microseconds=offset * 1000))
                )
                ids.append(profile_id)
        return ids

    def add_existing(self, list_id: str, profile_id: str, joined_at: datetime) -> None:
        with self._lock:
            self.members[list_id].append(Membership(profile_id, joined_at))

    def remove_from_list(self, list_id: str, profile_id: str) -> None:
        with self._lock:
            self.members[list_id] = [m for m in self.members[list_id] if m.profile_id != profile_id]

    def fail(
        self,
        times: int,
        status: int = 503,
        path_contains: str = "",
        retry_after: float | None = None,
    ) -> None:
        """The next `times` requests whose path+query contains the text answer with `status`
        (with a `Retry-After` header when given: a 429 storm however fast the client is)."""
        with self._lock:
            self._failures.append((path_contains, times, status, retry_after))

    def requests(self, path_contains: str = "") -> list[LoggedRequest]:
        with self._lock:
            return [
                r
                for r in self.log
                if path_contains in r.path + "?" + urlencode(r.query, safe="[](),:")
            ]

    # ---- the HTTP side -------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/lists", self._get_lists),
                Route("/api/lists/", self._get_lists),
                Route("/api/lists/{list_id}/profiles", self._get_list_profiles),
                Route("/api/lists/{list_id}/profiles/", self._get_list_profiles),
            ]
        )

    async def _get_lists(self, request: Request) -> JSONResponse:
        refused = self._gate(request)
        if refused is not None:
            return refused
        with self._lock:
            ordered = sorted(self.lists.items())
        offset = _decode_cursor(request.query_params.get("page[cursor]"))
        if offset is None:
            return self._logged(request, _error(400, "invalid", "Invalid page cursor"))
        page = ordered[offset : offset + LISTS_PAGE_SIZE]
        data = [
            {
                "type": "list",
                "id": list_id,
                "attributes": dict(attributes),
                "relationships": {
                    "profiles": {
                        "links": {"related": f"{self.base_url}/api/lists/{list_id}/profiles/"}
                    }
                },
                "links": {"self": f"{self.base_url}/api/lists/{list_id}/"},
            }
            for list_id, attributes in page
        ]
        links: dict[str, Any] = {"self": str(request.url), "next": None, "prev": None}
        if offset + LISTS_PAGE_SIZE < len(ordered):
            cursor = page_cursor(offset + LISTS_PAGE_SIZE)
            links["next"] = f"{self.base_url}/api/lists/?{urlencode({'page[cursor]': cursor})}"
        return self._logged(request, _document({"data": data, "links": links}))

    async def _get_list_profiles(self, request: Request) -> JSONResponse:
        refused = self._gate(request)
        if refused is not None:
            return refused
        list_id = request.path_params["list_id"]
        with self._lock:
            if list_id not in self.lists:
                return self._logged(
                    request, _error(404, "not_found", f"A list with id {list_id} does not exist.")
                )
            members = list(self.members[list_id])
        query = request.query_params
        try:
            size = int(query.get("page[size]", "20"))
        except ValueError:
            size = 0
        if not 1 <= size <= 100:
            return self._logged(
                request, _error(400, "invalid", "page[size] must be between 1 and 100")
            )
        sort = query.get("sort", "joined_group_at")
        if sort not in ("joined_group_at", "-joined_group_at"):
            return self._logged(request, _error(400, "invalid", f"'{sort}' is not a valid sort"))
        if (text := query.get("filter")) is not None:
            found = _FILTER.match(text)
            moment = _parse(found.group(2)) if found else None
            if found is None or moment is None:
                return self._logged(request, _error(400, "invalid", f"Invalid filter: {text}"))
            members = [m for m in members if _compare(found.group(1), m.joined_group_at, moment)]
        members.sort(key=lambda m: (m.joined_group_at, m.profile_id), reverse=sort.startswith("-"))
        offset = _decode_cursor(query.get("page[cursor]"))
        if offset is None:
            return self._logged(request, _error(400, "invalid", "Invalid page cursor"))
        page = members[offset : offset + size]
        with self._lock:
            data = [
                {
                    "type": "profile",
                    "id": m.profile_id,
                    "attributes": {
                        **self.profiles[m.profile_id],
                        "joined_group_at": _iso(m.joined_group_at),
                    },
                    "links": {"self": f"{self.base_url}/api/profiles/{m.profile_id}/"},
                }
                for m in page
            ]
        links: dict[str, Any] = {"self": str(request.url), "next": None, "prev": None}
        if offset + size < len(members):
            params = {k: v for k, v in query.items() if k != "page[cursor]"}
            params["page[cursor]"] = page_cursor(offset + size)
            links["next"] = (
                f"{self.base_url}/api/lists/{list_id}/profiles/?{urlencode(params, safe='[](),:')}"
            )
        return self._logged(request, _document({"data": data, "links": links}))

    def _gate(self, request: Request) -> JSONResponse | None:
        """Authentication, revision, the request budget and injected failures, in that order."""
        authorization = request.headers.get("authorization", "")
        scheme, _, key = authorization.partition(" ")
        if scheme != "Klaviyo-API-Key" or key not in self.api_keys:
            return self._logged(
                request,
                _error(401, "not_authenticated", "Authentication credentials were not provided."),
            )
        if not request.headers.get("revision"):
            return self._logged(
                request,
                _error(400, "invalid", "The revision header is required.", parameter="revision"),
            )
        now = time.monotonic()
        with self._lock:
            if self.budget is not None:
                self._recent = [at for at in self._recent if at > now - self.window_s]
                if len(self._recent) >= self.budget:
                    wait = self._recent[0] + self.window_s - now
                    retry_after = max(1, math.ceil(wait))
                    response = _error(
                        429,
                        "throttled",
                        f"Request was throttled. Expected available in {retry_after} second.",
                    )
                    response.headers["Retry-After"] = str(retry_after)
                    self.log.append(
                        LoggedRequest(
                            now,
                            request.url.path,
                            dict(request.query_params),
                            429,
                            float(retry_after),
                        )
                    )
                    return response
                self._recent.append(now)
            target = request.url.path + "?" + urlencode(request.query_params, safe="[](),:")
            for index, (contains, times, status, wait_s) in enumerate(self._failures):
                if contains in target and times > 0:
                    self._failures[index] = (contains, times - 1, status, wait_s)
                    failure = _error(status, "error", "A server error occurred.")
                    if wait_s is not None:
                        failure.headers["Retry-After"] = f"{wait_s:g}"
                    self.log.append(
                        LoggedRequest(
                            now, request.url.path, dict(request.query_params), status, wait_s
                        )
                    )
                    return failure
        return None

    def _logged(self, request: Request, response: JSONResponse) -> JSONResponse:
        with self._lock:
            self.log.append(
                LoggedRequest(
                    time.monotonic(),
                    request.url.path,
                    dict(request.query_params),
                    response.status_code,
                )
            )
        return response


def _document(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, media_type=JSONAPI)


def _error(status: int, code: str, detail: str, parameter: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {
        "id": f"err-{time.monotonic_ns()}",
        "status": status,
        "code": code,
        "title": detail.split(".")[0] + ".",
        "detail": detail,
        "source": {"parameter": parameter} if parameter else {"pointer": "/data/"},
    }
    return JSONResponse({"errors": [error]}, status_code=status, media_type=JSONAPI)


def page_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        offset = json.loads(base64.urlsafe_b64decode(padded))["o"]
    except (ValueError, KeyError, TypeError):
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(operator: str, value: datetime, bound: datetime) -> bool:
    if operator == "greater-than":
        return value > bound
    if operator == "greater-or-equal":
        return value >= bound
    if operator == "less-than":
        return value < bound
    return value <= bound


@contextmanager
def running(fake: FakeKlaviyo | None = None, port: int | None = None) -> Iterator[FakeKlaviyo]:
    """Serve the fake with uvicorn in a thread on loopback (a free port unless given)."""
    fake = fake or FakeKlaviyo()
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    fake.base_url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="fake-klaviyo", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake Klaviyo server did not start")
        time.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
