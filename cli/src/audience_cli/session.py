"""The state shared by every command: how to reach the API and how to print."""

from dataclasses import dataclass, field

import httpx

from audience_cli.client import ApiClient
from audience_cli.errors import CliError
from audience_cli.output import Output


@dataclass
class Session:
    """Filled by the global options; tests pass one with a mock `transport` as `obj`."""

    url: str = "http://127.0.0.1:8000"
    key: str | None = None
    project: str | None = None
    output: Output = field(default_factory=Output)
    transport: httpx.BaseTransport | None = None
    poll_interval_s: float = 0.5
    _client: ApiClient | None = None

    def client(self) -> ApiClient:
        if self.key is None:
            raise CliError(
                "no_api_key", "no API key: pass --key or set AUDIENCES_API_KEY (make up prints one)"
            )
        if self._client is None:
            self._client = ApiClient(self.url, self.key, self.project, self.transport)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
