"""Runs the services as real processes against the real broker and store for the test session."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import new_project_key

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / ".local" / "test" / "log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    """One service as a child process, with its own log file; can be killed and restarted."""

    name: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.name}-{self.port}.log"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"audience_{self.name.split('-')[0]}.main"],
            env={**self.env, "AUDIENCES_PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.process.returncode}:\n"
                    + self.log_path.read_text()[-3000:],
                    pytrace=False,
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{self.name} not ready in {timeout}s:\n" + self.log_path.read_text()[-3000:])

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no final commits."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    api_url: str
    admin_key: str
    database: str
    env: dict[str, str]
    services: dict[str, ServiceProcess]


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, mongo_url: str) -> Iterator[Stack]:
    database = f"audiences_test_{secrets.token_hex(4)}"
    admin_key = f"sk_test_{secrets.token_hex(16)}"
    env = {
        **os.environ,
        "AUDIENCES_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "AUDIENCES_MONGO_URL": mongo_url,
        "AUDIENCES_MONGO_DATABASE": database,
        "AUDIENCES_BOOTSTRAP_API_KEY": admin_key,
        "AUDIENCES_SWEEP_INTERVAL_S": "1",
        "AUDIENCES_LOG_LEVEL": "INFO",
        # Consumer groups of this session only: another session on the same broker (or a
        # `make up`) must never take this session's partitions.
        "AUDIENCES_CONSUMER_GROUP": f"evaluator-{database}",
        "AUDIENCES_SYNC_CONSUMER_GROUP": f"sync-{database}",
        # The sync tests serve their fake Klaviyo on this port (tests/fakes/klaviyo.py).
        "AUDIENCES_KLAVIYO_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "AUDIENCES_IMPORTS_DIR": str(ROOT / ".local" / "test" / "data" / database / "imports"),
        "AUDIENCES_EXPORTS_DIR": str(ROOT / ".local" / "test" / "data" / database / "exports"),
        "AUDIENCES_SCHEDULER_INTERVAL_S": "1",
        "AUDIENCES_INCREMENTAL_INTERVAL_S": "0",
        "AUDIENCES_JOB_POLL_S": "0.5",
        "AUDIENCES_KLAVIYO_BACKOFF_MAX_S": "0.5",
        # Time-driven tests shift the services' clock by writing seconds here (see clock_shift).
        "AUDIENCES_CLOCK_OFFSET_FILE": str(
            ROOT / ".local" / "test" / "data" / database / "clock_offset"
        ),
    }
    services = {
        "evaluator": ServiceProcess("evaluator", free_port(), env),
        "api": ServiceProcess("api", free_port(), env),
        "sync": ServiceProcess("sync", free_port(), env),
    }
    try:
        for service in services.values():
            service.start()
    except BaseException:
        for service in services.values():
            service.stop()
        raise
    yield Stack(
        api_url=f"http://127.0.0.1:{services['api'].port}",
        admin_key=admin_key,
        database=database,
        env=env,
        services=services,
    )
    for service in services.values():
        service.stop()


@pytest.fixture
async def project_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding a key of a fresh project, so tests never see each other's data."""
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    ) as admin:
        project = (await admin.post("/v1/projects", json={"name": "test"})).json()
        key = (
            await admin.post("/v1/keys", json={"project_id": project["id"], "scope": "admin"})
        ).json()
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30
    ) as client:
        client.project_id = project["id"]  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def clock_shift(stack: Stack) -> Iterator[Callable[[timedelta], None]]:
    """Move the running services' clock forward; it is put back after the test."""
    path = Path(stack.env["AUDIENCES_CLOCK_OFFSET_FILE"])
    path.parent.mkdir(parents=True, exist_ok=True)

    def shift(by: timedelta) -> None:
        path.write_text(str(by.total_seconds()))

    yield shift
    path.unlink(missing_ok=True)


@pytest.fixture
async def other_project_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A key of another fresh project: for checking that it sees none of project_client's data."""
    _project, key = await new_project_key(stack)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client
