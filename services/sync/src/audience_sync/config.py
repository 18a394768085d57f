"""Settings of the sync service."""

from pathlib import Path

from pydantic import SecretStr

from audience_shared.settings import BaseServiceSettings

SYNC_GROUP = "audiences-sync"


class Settings(BaseServiceSettings):
    port: int = 8002
    sync_consumer_group: str = SYNC_GROUP
    # Must equal the api's: integration keys are encrypted with material derived from it.
    secret_key: SecretStr = SecretStr("audiences-development-secret-change-me")

    klaviyo_base_url: str = "https://a.klaviyo.com"
    klaviyo_revision: str = "2024-10-15"
    # The documented steady limit of the list endpoints is 700-750 requests a minute (~12/s);
    # we pace under it so a long pull never needs the 429 path at all.
    klaviyo_requests_per_second: float = 10.0
    klaviyo_page_size: int = 100
    klaviyo_timeout_s: float = 30.0
    # 5xx and network errors: attempts per request before the run pauses and resumes later.
    klaviyo_max_attempts: int = 6
    klaviyo_backoff_max_s: float = 30.0
    # A Retry-After longer than this fails the request (transient) instead of blocking a worker.
    klaviyo_max_retry_after_s: float = 120.0
    # How long a run keeps resuming from its checkpoint after transient source failures.
    run_retry_s: float = 600.0

    # Uploaded CSV files (written by the api) and unload files; share them between the two.
    imports_dir: Path = Path(".local/data/imports")
    exports_dir: Path = Path(".local/data/exports")
    import_chunk_rows: int = 5_000
    export_page_rows: int = 1_000

    # Work records are claimed with a lease; a crashed worker's work is resumed after it lapses.
    workers: int = 2
    job_lease_s: float = 30.0
    job_poll_s: float = 2.0

    scheduler_interval_s: float = 30.0
    # Incremental Klaviyo pulls (joined_group_at filter) between the daily full reconciles.
    incremental_interval_s: float = 3_600.0
    max_backoff_s: float = 10.0
    # Shifts the scheduler's clock; tests use it to reach a 09:00 slot without waiting for one.
    scheduler_clock_offset_s: float = 0.0
