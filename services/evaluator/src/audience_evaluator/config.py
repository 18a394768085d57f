"""Settings of the evaluator."""

from pydantic import Field

from audience_shared.settings import BaseServiceSettings
from audience_shared.topics import EVALUATOR_GROUP


class Settings(BaseServiceSettings):
    port: int = 8001
    consumer_group: str = EVALUATOR_GROUP
    # Under load, a bigger batch shares its fixed costs (one counter write per audience, one
    # command per few hundred documents) among more events: 500 → 2,000 took bench-evaluator
    # from 990 to 1,300 events/s. Under light load batches stay small (batch_timeout_ms).
    batch_max_records: int = 2000
    batch_timeout_ms: int = 50
    # The broker holds a fetch until this much has arrived or the wait is over: without it, under
    # a steady trickle every fetch returns at once with a few records, and the fetches cost the
    # broker more CPU than the events do. The wait adds at most its length to an event's latency.
    # 16 kB is some 65 events: a process taking less than that in 25 ms still fetches every 25 ms.
    # A batch does not wait for a fetch in flight (see handlers.with_arrivals).
    fetch_min_bytes: int = 16384
    fetch_max_wait_ms: int = 25
    # A pause after each offset commit, the batches processed meanwhile committed together: a
    # crash redelivers about this much more, which changes nothing (the events are deduplicated),
    # and the broker answers a few commits a second instead of one per batch.
    commit_interval_s: float = Field(default=0.25, ge=0)
    # A time-driven entry or exit lands within this many seconds of its due time.
    sweep_interval_s: float = 5.0
    backfill_chunk: int = 500
    # Profiles kept in memory so an event for a recent user skips the store read; 0 turns the
    # cache off. The most recent ones are kept decoded (about 15 KB each, and no decoding on a
    # hit), the rest as BSON (about 2 KB each).
    profile_cache_size: int = 100_000
    profile_cache_decoded_size: int = 30_000
    # Python's cyclic garbage collector thresholds (gc.set_threshold). With Python's defaults a
    # full collection ran every few seconds and walked every cached profile (400,000 objects at
    # 30,000 decoded profiles: about 300 ms, every event in the process waiting). Profiles hold no
    # cycles; the young generations still collect the short-lived cycles asyncio makes. Between
    # batches the collector runs over what the batch left and freezes the survivors (see
    # garbage.py), so these bound only the collections inside a batch or a build.
    gc_thresholds: tuple[int, int, int] = (50_000, 20, 100)
    # Frozen objects are freed by reference counting; one that ends up in a garbage cycle waits
    # for the collection of the whole heap, at the first batch this long after the last one
    # (about 0.3 s per 30,000 decoded profiles cached).
    gc_full_interval_s: float = Field(default=600.0, gt=0)
    reconcile_interval_s: float = 300.0
    # Store or broker outages: retry with backoff up to this many seconds between attempts.
    max_backoff_s: float = 10.0
