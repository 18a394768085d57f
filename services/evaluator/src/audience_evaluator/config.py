"""Settings of the evaluator."""

from audience_shared.settings import BaseServiceSettings
from audience_shared.topics import EVALUATOR_GROUP


class Settings(BaseServiceSettings):
    port: int = 8001
    consumer_group: str = EVALUATOR_GROUP
    batch_max_records: int = 500
    batch_timeout_ms: int = 50
    # A time-driven entry or exit lands within this many seconds of its due time.
    sweep_interval_s: float = 5.0
    backfill_chunk: int = 500
    # Profiles kept in memory (as BSON, about 2 KB each) so an event for a recent user skips the
    # store read; 0 turns the cache off.
    profile_cache_size: int = 100_000
    reconcile_interval_s: float = 300.0
    # Store or broker outages: retry with backoff up to this many seconds between attempts.
    max_backoff_s: float = 10.0
