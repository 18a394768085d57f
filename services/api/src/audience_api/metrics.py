"""Prometheus metrics of the gateway: HTTP requests by route and status, events accepted."""

import time

from prometheus_client import Counter, Histogram
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

HTTP_REQUESTS = Histogram(
    "audiences_api_request_seconds",
    "HTTP request duration by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
)
EVENTS_ACCEPTED = Counter(
    "audiences_api_events_accepted_total", "User events accepted and published", ["kind"]
)


class RequestMetrics(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The template, not the raw path, so ids do not explode the label set.
        template = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(template, request.method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response
