"""Prometheus metrics of the evaluator."""

import gc
import time

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "audiences_evaluator_events_consumed_total", "Records consumed, by topic", ["topic"]
)
BATCH_SIZE = Histogram(
    "audiences_evaluator_batch_size",
    "Records per consumed batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
BATCH_SECONDS = Histogram(
    "audiences_evaluator_batch_seconds",
    "Time to fold, evaluate and write one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_SECONDS = Histogram(
    "audiences_evaluator_stage_seconds",
    "Time a batch spent in each stage: fetch (what arrived since its records were fetched), "
    "decode, read, evaluate, write, publish, count, mark, links",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MEMBERSHIP_CHANGES = Counter(
    "audiences_evaluator_membership_changes_total",
    "Membership entries and exits published",
    ["type", "reason"],
)
STORE_ERRORS = Counter(
    "audiences_evaluator_transient_errors_total",
    "Store or broker errors met and retried",
    ["work"],
)
MARK_CHECKS = Counter(
    "audiences_evaluator_mark_checks_total",
    "Checks of the delivered marks before counting: a replayed outbox, or a late count",
    ["why"],
)
DEAD_LETTERS = Counter(
    "audiences_evaluator_dead_letters_total", "Records sent to the dead-letter topic", ["topic"]
)
CONSUMER_LAG = Gauge(
    "audiences_evaluator_consumer_lag", "Records not yet processed, per partition", ["partition"]
)
PROFILE_CACHE = Gauge(
    "audiences_evaluator_profile_cache_entries",
    "Profiles cached in memory: decoded (no decoding on a hit) or encoded (BSON, decoded on a hit)",
    ["form"],
)
PROFILE_CACHE_ENCODED = Counter(
    "audiences_evaluator_profile_cache_encoded_total",
    "Cached profiles moved from decoded to encoded form to make room: when this grows steadily, "
    "the decoded part is smaller than the profiles a process keeps writing",
)
SWEEP_SCANS = Histogram(
    "audiences_evaluator_sweep_scan_seconds",
    "The sweeper's scans of the store for due profiles (at startup, after each partition "
    "assignment, and spaced out between): each reads every profile where due_at is not indexed",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GC_PAUSES = Histogram(
    "audiences_evaluator_gc_pause_seconds",
    "Python's cyclic garbage collections, by generation: every event in the process waits",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class _GcTimer:
    """A gc callback timing each collection into GC_PAUSES."""

    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            GC_PAUSES.labels(str(info["generation"])).observe(time.perf_counter() - self._started)


_GC_TIMER = _GcTimer()


def time_gc_pauses() -> None:
    """Time every garbage collection of this process into GC_PAUSES."""
    if _GC_TIMER not in gc.callbacks:
        gc.callbacks.append(_GC_TIMER)
