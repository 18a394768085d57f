"""Settings of the REST gateway."""

from pydantic import SecretStr

from audience_shared.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    port: int = 8000
    bootstrap_api_key: SecretStr | None = None
    # Signs page cursors and encrypts stored integration keys; set it in production.
    secret_key: SecretStr = SecretStr("audiences-development-secret-change-me")
    rate_limit_per_second: float = 50
    rate_limit_burst: int = 100
    max_body_bytes: int = 1_000_000
    # How long a create waits for materialization before answering with an estimate.
    create_wait_seconds: float = 2.0
