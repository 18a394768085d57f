"""The one failure the CLI reports: an error code (the API's, or ours) and a readable message."""

from typing import Any


class CliError(Exception):
    """Printed as one line `error: <code>: <message>`; the command exits non-zero."""

    def __init__(
        self, code: str, message: str, details: Any = None, status: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.status = status

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}
