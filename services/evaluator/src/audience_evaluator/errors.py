"""Errors of the evaluator, split by what to do about them."""

from aiokafka.errors import KafkaError
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, PyMongoError


class Contention(Exception):
    """Other writers kept winning the same documents; backing off and retrying resolves it."""


class LateCount(Contention):
    """A counter write would go out after its deadline (see SETTLE_GRACE_S in the store
    adapter); the caller checks the delivered marks afresh and counts again."""

    def __init__(self, late_by_s: float) -> None:
        super().__init__(f"counter write {late_by_s:.1f} s past its deadline")


# Outages and contention: pause, back off, retry; never commit the work they interrupted.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Contention,
    ConnectionFailure,
    AutoReconnect,
    NetworkTimeout,
    KafkaError,
    TimeoutError,
    OSError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    # Server-side errors that say "try again" (e.g. not primary, interrupted at shutdown).
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")
