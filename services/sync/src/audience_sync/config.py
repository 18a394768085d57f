"""Settings of the sync service."""

from audience_shared.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    port: int = 8002
    klaviyo_base_url: str = "https://a.klaviyo.com"
