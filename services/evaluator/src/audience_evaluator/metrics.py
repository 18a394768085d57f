"""Prometheus metrics of the evaluator."""

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
