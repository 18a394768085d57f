"""Per-key token buckets: how many requests a key may make now, and when it may make more.

Hand-written rather than a library: the RateLimit-* headers need the bucket's remaining tokens
and refill time, and each key can carry its own rate; the libraries on PyPI expose neither
(`limits` counts windows, not tokens; `token-bucket` fixes one rate per limiter). The buckets
live in the gateway process, so with several gateway processes a key's limit applies per process.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: int


@dataclass(frozen=True)
class Decision:
    """The outcome of one request against its key's bucket, with what the headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key: it holds up to `burst` tokens and refills at `per_second`."""

    def __init__(self, default: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._default = default
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_id: str, limit: RateLimit | None = None) -> Decision:
        rate = limit or self._default
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(tokens=float(rate.burst), updated=now)
        bucket.tokens = min(
            float(rate.burst), bucket.tokens + (now - bucket.updated) * rate.per_second
        )
        bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        return Decision(
            allowed=allowed,
            limit=rate.burst,
            remaining=math.floor(bucket.tokens),
            reset_s=math.ceil((rate.burst - bucket.tokens) / rate.per_second),
            retry_after_s=0
            if allowed
            else max(1, math.ceil((1.0 - bucket.tokens) / rate.per_second)),
        )
