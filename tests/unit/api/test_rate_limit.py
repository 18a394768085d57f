"""Token buckets: burst, refill, per-key limits, and what the headers report."""

from audience_api.rate_limit import RateLimit, TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_take__burst_then_refused__retry_after_is_time_to_one_token() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(per_second=2, burst=3), clock)
    decisions = [buckets.take("k") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.retry_after_s == 1
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["RateLimit-Limit"] == "3"
    assert refused.reset_s == 2  # 3 tokens at 2 per second


def test_take__time_passes__tokens_refill_up_to_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(per_second=1, burst=2), clock)
    buckets.take("k")
    buckets.take("k")
    assert not buckets.take("k").allowed
    clock.now += 1.0
    assert buckets.take("k").allowed
    clock.now += 60.0
    assert buckets.take("k").remaining == 1  # capped at burst 2, minus this request


def test_take__key_limit__overrides_default_and_keys_are_separate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(per_second=50, burst=100), clock)
    own = RateLimit(per_second=1, burst=1)
    assert buckets.take("slow", own).allowed
    assert not buckets.take("slow", own).allowed
    assert buckets.take("other").remaining == 99
    assert "Retry-After" not in buckets.take("other").headers()


def test_take__slow_rate__retry_after_rounds_up() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(per_second=0.1, burst=1), clock)
    buckets.take("k")
    clock.now += 2.5
    refused = buckets.take("k")
    assert not refused.allowed
    assert refused.retry_after_s == 8  # 0.75 of a token missing at 0.1 per second
