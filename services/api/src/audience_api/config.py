"""Settings of the REST gateway."""

from pathlib import Path

from pydantic import Field, SecretStr

from audience_shared.settings import BaseServiceSettings
from audience_shared.topics import EVALUATOR_GROUP


class Settings(BaseServiceSettings):
    port: int = 8000
    # Idle keep-alive connections are closed after this long. Longer than the idle timeouts of
    # clients' pools and load balancers (60 s is common): a server that closes first can close
    # a connection just as a client sends on it, and the client sees a reset instead of an answer.
    keep_alive_s: int = 75
    bootstrap_api_key: SecretStr | None = None
    # Signs page cursors and encrypts stored integration keys; set it in production.
    secret_key: SecretStr = SecretStr("audiences-development-secret-change-me")
    rate_limit_per_second: float = 50
    rate_limit_burst: int = 100
    max_body_bytes: int = 1_000_000
    # Requests one process works on at once (not counting waits on clients); past it, requests
    # are answered 503 `overloaded` at once (see admission.py). At a few hundred requests a second
    # per process, 128 being worked on is about a third of a second of queue. 0: no limit.
    max_requests_in_flight: int = Field(default=128, ge=0)
    klaviyo_base_url: str = "https://a.klaviyo.com"
    klaviyo_revision: str = "2024-10-15"
    imports_dir: Path = Path(".local/data/imports")
    exports_dir: Path = Path(".local/data/exports")
    max_upload_bytes: int = 2_000_000_000
    # How long a create waits for materialization before answering with an estimate.
    create_wait_seconds: float = 2.0
    # The ops dashboard: whose lag to report, and where the other services answer /readyz
    # (unset: shown as "not configured" rather than guessed).
    consumer_group: str = EVALUATOR_GROUP
    evaluator_url: str | None = None
    sync_url: str | None = None
    # Campaign experiments: the event that counts as a conversion when an experiment names none.
    conversion_event: str = "purchase"
