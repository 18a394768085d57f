"""ASGI middleware answering 503 `overloaded` at once while too many requests are worked on."""

from collections.abc import Awaitable
from typing import TypeVar

from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audience_api.segment import error_body

T = TypeVar("T")

REQUESTS_SHED = Counter(
    "audiences_api_requests_shed_total",
    "Requests answered 503 overloaded because the process was working on too many",
)

# Always answered: health and metrics are how an overload is seen, and so is the dashboard
# (its page and its data).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
EXEMPT_PREFIXES = ("/dashboard", "/v1/ops")


class AdmissionLimit:
    """Refuse what a gateway process cannot work on in time, instead of queueing it.

    Past its capacity, a process otherwise takes in every request its clients' connections bring
    and answers all of them late, each waiting behind all the others. A request that arrives while
    `max_in_flight` are being worked on is refused before any work, so the ones admitted stay fast
    and clients are told to back off (`Retry-After`). Per-key rate limits do not do this: they shed
    only what one key sends beyond its own limit, however busy the process is.

    Only the server's own work counts: while a request waits on its client (a body still
    arriving, a download the client reads slowly) it gives its place back, so slow or stalled
    clients cannot lock the others out, and long uploads and downloads take no place while they
    wait on the network. The limit applies when a request arrives: requests let in while others
    waited on their clients may all be worked on at once afterwards, for a while above it.
    """

    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.working = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.max_in_flight or _exempt(scope):
            await self.app(scope, receive, send)
            return
        if self.working >= self.max_in_flight:
            REQUESTS_SHED.inc()
            await _overloaded()(scope, receive, send)
            return

        # This request's calls now waiting on its client: a response may watch for a disconnect
        # while it sends (two at once), and the request must count once or not at all.
        waits = 0

        async def waiting_on_client(call: Awaitable[T]) -> T:
            nonlocal waits
            waits += 1
            if waits == 1:
                self.working -= 1
            try:
                return await call
            finally:
                waits -= 1
                if waits == 0:
                    self.working += 1

        async def client_receive() -> Message:
            return await waiting_on_client(receive())

        async def client_send(message: Message) -> None:
            await waiting_on_client(send(message))

        self.working += 1
        try:
            await self.app(scope, client_receive, client_send)
        finally:
            self.working -= 1


def _exempt(scope: Scope) -> bool:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    # A CORS preflight costs nothing, and refusing it would hide the real answer from browsers.
    return scope["method"] == "OPTIONS" or path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _overloaded() -> JSONResponse:
    # error_body: the one error shape plus the top-level fields the Segment SDKs read; the CORS
    # header lets a browser's analytics.js read the status and Retry-After.
    return JSONResponse(
        error_body(
            "overloaded",
            "The gateway is working on too many requests; retry in a second",
            {"retry_after_seconds": 1},
        ),
        status_code=503,
        headers={"Retry-After": "1", "Access-Control-Allow-Origin": "*"},
    )
