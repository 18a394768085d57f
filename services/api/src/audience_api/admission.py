"""ASGI middleware answering 503 `overloaded` at once while too many requests are in flight."""

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from audience_api.http_errors import error_response

REQUESTS_SHED = Counter(
    "audiences_api_requests_shed_total",
    "Requests answered 503 overloaded because the process had too many in flight",
)

# Health and metrics stay answered under any load: they are how an overload is seen.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AdmissionLimit:
    """Refuse what a gateway process cannot answer in time, instead of queueing it.

    Past its capacity, a process otherwise takes every request in and answers all of them late:
    offered three times what it could serve, one process answered everything, with a p99 of 20 s.
    A request beyond `max_in_flight` is refused before any work (no body read, no store call), so
    the ones admitted stay fast and clients are told to back off (`Retry-After`). Per-key rate
    limits do not do this: they shed only what one key sends beyond its own limit.
    """

    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS or not self.max_in_flight:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            REQUESTS_SHED.inc()
            response = error_response(
                503,
                "overloaded",
                "The gateway has too many requests in flight; retry in a second",
                {"max_in_flight": self.max_in_flight},
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
