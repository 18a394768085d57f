"""Klaviyo's JSON:API over httpx: paced under the steady limit, 429-aware, 5xx-resilient."""

import asyncio
import random
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from audience_sync.errors import SourceRejected, SourceUnavailable
from audience_sync.metrics import KLAVIYO_PAGES, KLAVIYO_REQUESTS, KLAVIYO_THROTTLED
from audience_sync.ports import ProfilePage, SourceList, SourceProfile

log = structlog.get_logger()

# After this many 429s in a row for one request the run pauses and resumes later from its
# checkpoint, so one starved request cannot hold a worker forever.
MAX_CONSECUTIVE_THROTTLES = 30


class _ServerFailure(Exception):
    """A 5xx or a network error: worth retrying with backoff."""


def _retry_after_s(value: str | None) -> float:
    """Retry-After in seconds or as an HTTP date; Klaviyo sends whole seconds."""
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return 1.0


def _error_code(response: httpx.Response) -> tuple[str, str]:
    try:
        first = response.json()["errors"][0]
        return str(first.get("code", "error")), str(first.get("detail", response.reason_phrase))
    except (ValueError, KeyError, IndexError, TypeError):
        return "error", response.reason_phrase


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _profile(resource: dict[str, Any]) -> SourceProfile:
    attributes: dict[str, Any] = resource.get("attributes") or {}

    def text(name: str) -> str | None:
        value = attributes.get(name)
        return value.strip() or None if isinstance(value, str) else None

    properties = attributes.get("properties")
    return SourceProfile(
        id=str(resource["id"]),
        email=text("email"),
        phone=text("phone_number"),
        external_id=text("external_id"),
        first_name=text("first_name"),
        last_name=text("last_name"),
        properties=properties if isinstance(properties, dict) else {},
        joined_group_at=_parse_time(attributes.get("joined_group_at")),
    )


class KlaviyoClient:
    """One per process: pacing and 429 pauses are per API key, shared by all runs using it."""

    def __init__(
        self,
        base_url: str,
        revision: str,
        requests_per_second: float,
        page_size: int = 100,
        timeout_s: float = 30.0,
        max_attempts: int = 6,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._revision = revision
        self._interval_s = 1.0 / requests_per_second
        self._page_size = page_size
        self._max_attempts = max_attempts
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._limiters: dict[str, AsyncLimiter] = {}
        self._paused_until: dict[str, float] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    def first_profiles_url(self, list_id: str, since: datetime | None) -> str:
        params = {"page[size]": str(self._page_size)}
        if since is not None:
            # Incremental pull: only members who joined after the last one we saw.
            stamp = since.astimezone(UTC).isoformat()
            params["filter"] = f"greater-than(joined_group_at,{stamp})"
            params["sort"] = "joined_group_at"
        return f"{self._base_url}/api/lists/{list_id}/profiles/?{urlencode(params, safe='[](),:')}"

    async def lists(self, api_key: str) -> list[SourceList]:
        found: list[SourceList] = []
        url: str | None = f"{self._base_url}/api/lists/"
        while url is not None:
            document = await self._get(api_key, url)
            for resource in document.get("data", []):
                attributes = resource.get("attributes") or {}
                found.append(
                    SourceList(id=str(resource["id"]), name=str(attributes.get("name") or ""))
                )
            url = (document.get("links") or {}).get("next")
        return found

    async def profiles_page(self, api_key: str, url: str) -> ProfilePage:
        document = await self._get(api_key, url)
        KLAVIYO_PAGES.inc()
        return ProfilePage(
            profiles=[_profile(resource) for resource in document.get("data", [])],
            next_url=(document.get("links") or {}).get("next"),
        )

    async def _get(self, api_key: str, url: str) -> dict[str, Any]:
        if not url.startswith(self._base_url + "/"):
            # Never send the key to a host a response named: only to the configured Klaviyo.
            raise SourceRejected("unexpected_link", f"Klaviyo linked outside its API: {url}")
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_ServerFailure),
                wait=wait_random_exponential(multiplier=0.5, max=self._backoff_max_s),
                stop=stop_after_attempt(self._max_attempts),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    return await self._get_honouring_throttles(api_key, url)
        except _ServerFailure as exc:
            raise SourceUnavailable(f"Klaviyo kept failing: {exc}") from exc
        raise AssertionError("unreachable")

    async def _get_honouring_throttles(self, api_key: str, url: str) -> dict[str, Any]:
        for _ in range(MAX_CONSECUTIVE_THROTTLES):
            await self._pace(api_key)
            try:
                response = await self._http.get(url, headers=self._headers(api_key))
            except httpx.TransportError as exc:
                KLAVIYO_REQUESTS.labels(outcome="network_error").inc()
                raise _ServerFailure(repr(exc)) from exc
            status = response.status_code
            if status == 429:
                KLAVIYO_REQUESTS.labels(outcome="throttled").inc()
                KLAVIYO_THROTTLED.inc()
                wait_s = _retry_after_s(response.headers.get("retry-after"))
                if wait_s > self._max_retry_after_s:
                    raise SourceUnavailable(f"Klaviyo asked us to wait {wait_s:.0f}s")
                # Every run on this key waits, not just this request: the budget is the key's.
                self._paused_until[api_key] = max(
                    self._paused_until.get(api_key, 0.0), time.monotonic() + wait_s
                )
                log.info("klaviyo.throttled", retry_after_s=wait_s)
                continue
            if status >= 500:
                KLAVIYO_REQUESTS.labels(outcome="server_error").inc()
                raise _ServerFailure(f"HTTP {status}")
            if status >= 400:
                KLAVIYO_REQUESTS.labels(outcome="rejected").inc()
                code, detail = _error_code(response)
                raise SourceRejected(f"klaviyo_{code}", f"Klaviyo refused ({status}): {detail}")
            KLAVIYO_REQUESTS.labels(outcome="ok").inc()
            body: dict[str, Any] = response.json()
            return body
        raise SourceUnavailable("Klaviyo kept throttling")

    async def _pace(self, api_key: str) -> None:
        paused = self._paused_until.get(api_key, 0.0) - time.monotonic()
        if paused > 0:
            # A little jitter so parallel runs on one key do not all fire at the same instant.
            await asyncio.sleep(paused + random.uniform(0, 0.1))
        limiter = self._limiters.get(api_key)
        if limiter is None:
            # One request per interval: evenly spaced rather than bursts up to the limit.
            limiter = self._limiters[api_key] = AsyncLimiter(1, self._interval_s)
        await limiter.acquire()

    def _headers(self, api_key: str) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {api_key}",
            "revision": self._revision,
            "accept": "application/vnd.api+json",
        }

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("klaviyo.failed", attempt=state.attempt_number, error=str(error))
