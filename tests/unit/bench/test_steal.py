"""The benchmark's slower machine: a real-time burner per core, gone when the run is."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.steal import stolen_cores

ROOT = Path(__file__).resolve().parents[3]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdecimal():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # The parent pid is the second field after the command, which is in parentheses.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def real_time(pid: int) -> bool:
    try:
        return os.sched_getscheduler(pid) == os.SCHED_FIFO
    except OSError:
        return False


def real_time_allowed() -> bool:
    """Whether a process here may take real-time scheduling (asked of a child, not of pytest)."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


needs_real_time = pytest.mark.skipif(
    not real_time_allowed(), reason="real-time scheduling is not allowed here"
)


def test_stolen_cores__zero__starts_nothing() -> None:
    before = set(children_of(os.getpid()))
    with stolen_cores(0):
        assert set(children_of(os.getpid())) == before


@pytest.mark.parametrize("percent", [-5, 90, 150])
def test_stolen_cores__share_out_of_range__refused_with_the_range(percent: int) -> None:
    with pytest.raises(SystemExit, match="between 1 and 89 percent"), stolen_cores(percent):
        pass


@needs_real_time
def test_stolen_cores__a_real_time_burner_pinned_on_each_core__killed_after() -> None:
    cores = sorted(os.sched_getaffinity(0))
    before = set(children_of(os.getpid()))
    with stolen_cores(10):
        burners = [pid for pid in children_of(os.getpid()) if pid not in before]
        assert len(burners) == len(cores)
        assert sorted(cpu for pid in burners for cpu in os.sched_getaffinity(pid)) == cores
        assert {os.sched_getscheduler(pid) for pid in burners} == {os.SCHED_FIFO}
    assert not any(alive(pid) for pid in burners)


@needs_real_time
def test_stolen_cores__benchmark_killed__burners_exit_by_themselves() -> None:
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom bench.steal import stolen_cores\n"
            "with stolen_cores(5):\n    time.sleep(60)",
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 10
        # Until every burner runs as set up (pinned, real-time), i.e. the benchmark is in its
        # block; a burner may not have started Python yet when it is killed: that must hold too.
        while not (
            len(burners := children_of(run.pid)) == len(os.sched_getaffinity(0))
            and all(real_time(pid) for pid in burners)
        ):
            assert time.monotonic() < deadline, "the burners never started"
            time.sleep(0.01)
    finally:
        run.send_signal(signal.SIGKILL)  # no cleanup runs: the burners must notice alone
        run.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in burners):
        assert time.monotonic() < deadline, "a burner outlived the benchmark"
        time.sleep(0.05)
