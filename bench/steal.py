"""A slower machine on demand: a real-time process on every core takes a share of it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Busy for `on` seconds, asleep for `off`, until the benchmark that started it is gone: what a
# noisy neighbour on a shared host does to a virtual machine's cores, in slices short enough
# that every process here feels it evenly. It checks its parent because a killed benchmark never
# reaches its cleanup, and a real-time burner left behind would slow every later run. The parent
# is named on the command line: a benchmark killed before the burner started up has handed it to
# another parent already, which getppid() at start would take for its own.
_BURNER = """
import os, sys, time
on, off, parent = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
while os.getppid() == parent:
    end = time.perf_counter() + on
    while time.perf_counter() < end:
        pass
    time.sleep(off)
"""

SLICE_S = 0.002


@contextmanager
def stolen_cores(percent: int) -> Iterator[None]:
    """Take `percent` of every core while the block runs (0: nothing). Needs the right to
    real-time scheduling: root, CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 10."""
    if not percent:
        yield
        return
    if not 0 < percent < 90:
        raise SystemExit(f"--steal must be between 1 and 89 percent, not {percent}")
    on = SLICE_S * percent / 100
    burners: list[subprocess.Popen[bytes]] = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            burner = subprocess.Popen(
                [sys.executable, "-c", _BURNER, str(on), str(SLICE_S - on), str(os.getpid())]
            )
            burners.append(burner)
            try:
                os.sched_setaffinity(burner.pid, {cpu})
                # Above every ordinary process, so the share is taken whatever else runs.
                os.sched_setscheduler(burner.pid, os.SCHED_FIFO, os.sched_param(10))
            except OSError as exc:
                raise SystemExit(f"--steal needs real-time scheduling: {exc}") from exc
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
