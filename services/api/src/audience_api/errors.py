"""Domain errors of the gateway; the HTTP layer maps each code to a status once."""

from typing import Any


class ApiError(Exception):
    """An error a client can act on: a stable code, a message, optional details."""

    status = 400

    def __init__(self, code: str, message: str, details: Any = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.extra = extra


class InvalidRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self, message: str = "A valid API key is required") -> None:
        super().__init__("unauthorized", message)


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404

    def __init__(self, what: str, ident: str) -> None:
        super().__init__("not_found", f"{what} {ident!r} was not found", {"id": ident})


class Conflict(ApiError):
    status = 409


class Unavailable(ApiError):
    status = 503

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__("unavailable", message, retry_after=retry_after_s)


class RateLimited(ApiError):
    status = 429

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "rate_limited",
            f"Too many requests for this API key; retry in {retry_after_s} s",
            {"retry_after_seconds": retry_after_s},
            retry_after=retry_after_s,
        )
