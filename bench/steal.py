"""A slower machine on demand: a real-time process on every core takes a share of it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Busy for `on` seconds, asleep for `off`, forever: what a noisy neighbour on a shared host does
# to a virtual machine's cores, in slices short enough that every process here feels it evenly.
_BURNER = """
import sys, time
on, off = float(sys.argv[1]), float(sys.argv[2])
while True:
    end = time.perf_counter() + on
    while time.perf_counter() < end:
        pass
    time.sleep(off)
"""

SLICE_S = 0.002


def _pinned_realtime(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    # Above every ordinary process, so the share is taken whatever the benchmark does.
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))


@contextmanager
def stolen_cores(percent: int) -> Iterator[None]:
    """Take `percent` of every core while the block runs (0: nothing). Needs the right to
    real-time scheduling (root, or CAP_SYS_NICE)."""
    if not percent:
        yield
        return
    if not 0 < percent < 90:
        raise SystemExit(f"--steal must be between 1 and 89 percent, not {percent}")
    on = SLICE_S * percent / 100
    burners = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            burners.append(
                subprocess.Popen(
                    [sys.executable, "-c", _BURNER, str(on), str(SLICE_S - on)],
                    preexec_fn=lambda cpu=cpu: _pinned_realtime(cpu),  # type: ignore[misc]
                )
            )
    except (PermissionError, subprocess.SubprocessError) as exc:
        for burner in burners:
            burner.kill()
        raise SystemExit(f"--steal needs real-time scheduling (run as root): {exc}") from exc
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
