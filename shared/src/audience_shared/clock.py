"""The services' clock: the system's, or shifted by an offset kept in a file (tests move time)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class ShiftedClock:
    """`now + offset`, where the offset (seconds, a float) is read from a file when it changes.

    Lets an end-to-end test move a running service's time forward ("8 days later") without
    waiting; a missing or empty file means no shift. Never configured in production.
    """

    def __init__(self, offset_file: str | Path) -> None:
        self._path = Path(offset_file)
        self._stamp: int | None = None
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        try:
            stamp = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            self._stamp, self._offset = None, timedelta(0)
        else:
            if stamp != self._stamp:
                text = self._path.read_text().strip()
                self._stamp = stamp
                self._offset = timedelta(seconds=float(text)) if text else timedelta(0)
        return datetime.now(UTC) + self._offset


def make_clock(offset_file: str | None) -> Clock:
    return ShiftedClock(offset_file) if offset_file else system_clock
