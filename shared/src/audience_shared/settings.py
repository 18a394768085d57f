"""Settings shared by the services: env prefix AUDIENCES_, nested delimiter __."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class BaseServiceSettings(BaseSettings):
    """What every service reads: broker, store, logging and where it listens."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIENCES_", env_nested_delimiter="__", extra="ignore"
    )

    kafka_bootstrap: str = "127.0.0.1:19092"
    mongo_url: str = "mongodb://127.0.0.1:27027/"
    mongo_database: str = "audiences"
    log_level: str = "INFO"
    log_json: bool = True
    host: str = "127.0.0.1"
    # Tests only: a file holding seconds to add to the clock (see audience_shared.clock).
    clock_offset_file: str | None = None
