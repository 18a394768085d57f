"""Errors of the sync service, split by what to do about them."""

from aiokafka.errors import KafkaError
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, PyMongoError


class SourceUnavailable(Exception):
    """The external source failed in a way that may pass (5xx, network, long throttling)."""


class SourceRejected(Exception):
    """The external source refused the request for good (bad key, unknown list)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JobFailed(Exception):
    """The work cannot succeed as asked (no header, missing file, no integration)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Outages of our own infrastructure: pause, back off, retry; never record unwritten work as done.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    AutoReconnect,
    NetworkTimeout,
    KafkaError,
    TimeoutError,
    SourceUnavailable,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")
