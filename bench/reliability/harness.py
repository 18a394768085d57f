"""What every scenario uses: service processes, the infrastructure scripts, projects, sending
events, waiting for convergence and measuring memberships against the oracle."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from audience_shared.topics import PARTITIONS, Topic
from bench.infra import ROOT
from bench.reliability.oracle import AUDIENCES, Stream, expected_members, http_item

# A key that no scenario except the load one should ever run into the rate limit with.
UNLIMITED = {"per_second": 100_000, "burst": 1_000_000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    """One service as a child process in its own process group, so kill -9 takes all of it."""

    name: str
    module: str
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env={**self.env, "AUDIENCES_PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_dir / self.name}.log")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready in {timeout}s")

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no final commits."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the issue's sizes by default, smaller with --quick."""

    kill_events: int = 100_000
    stream_events: int = 20_000
    outage_s: float = 15.0
    converge_timeout_s: float = 900.0
    load_phase_s: float = 60.0
    fuzz_examples: int = 2000

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(
            kill_events=6_000,
            stream_events=3_000,
            outage_s=15.0,
            converge_timeout_s=300.0,
            load_phase_s=15.0,
            fuzz_examples=300,
        )


@dataclass
class ScenarioResult:
    scenario: str
    events_sent: int
    expected: int
    actual: int
    lost: int
    duplicated: int
    recovery_s: float | None
    violations: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and not self.violations

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "events_sent": self.events_sent,
            "expected": self.expected,
            "actual": self.actual,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 1),
            "passed": self.passed,
            "violations": self.violations,
            "notes": self.notes,
        }


@dataclass
class Project:
    id: str
    key: str
    audiences: dict[str, str]  # oracle name -> audience id


@dataclass
class Harness:
    """The running system a scenario works against.

    `env` is what the services run with; `infra_env` is what deploy/local/kafka.sh and store.sh
    need to stop and start the very broker and store the services use. `evaluators` are the
    evaluator processes the harness owns (empty when a test's stack owns them).
    """

    env: dict[str, str]
    infra_env: dict[str, str]
    api_url: str
    admin_key: str
    log_dir: Path
    evaluators: list[ServiceProcess] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.env["AUDIENCES_KAFKA_BOOTSTRAP"]

    @property
    def mongo_url(self) -> str:
        return self.env["AUDIENCES_MONGO_URL"]

    @property
    def database(self) -> str:
        return self.env["AUDIENCES_MONGO_DATABASE"]

    @property
    def group(self) -> str:
        return self.env["AUDIENCES_CONSUMER_GROUP"]

    def evaluator(self, name: str, env: dict[str, str] | None = None) -> ServiceProcess:
        return ServiceProcess(name, "audience_evaluator.main", env or self.env, self.log_dir)

    def infra(self, script: str, action: str) -> None:
        """Stop or start the broker or the store through the project's own scripts."""
        subprocess.run(
            [str(ROOT / "deploy" / "local" / script), action],
            env=self.infra_env,
            check=True,
            capture_output=True,
        )

    def client(self, key: str, timeout: float = 30) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    async def new_project(self, name: str, audiences: bool = True) -> Project:
        """A fresh project (so scenarios never see each other's data) with an unlimited key and,
        unless told otherwise, the oracle's audiences, built and ready."""
        async with self.client(self.admin_key) as admin:
            project = await checked(admin.post("/v1/projects", json={"name": name}), 201)
            key = await checked(
                admin.post(
                    "/v1/keys",
                    json={"project_id": project["id"], "scope": "admin", "rate_limit": UNLIMITED},
                ),
                201,
            )
        made = Project(project["id"], key["key"], {})
        if audiences:
            async with self.client(made.key) as client:
                for oracle_name, criteria in AUDIENCES.items():
                    body = {"name": oracle_name, "criteria": criteria}
                    created = await checked(client.post("/v1/audiences", json=body), 201)
                    made.audiences[oracle_name] = created["id"]
                for audience_id in made.audiences.values():
                    await wait_ready(client, audience_id)
        return made


async def checked(request: Awaitable[httpx.Response], status: int) -> Any:
    response = await request
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:500]}")
    return response.json()


async def wait_ready(client: httpx.AsyncClient, audience_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await client.get(f"/v1/audiences/{audience_id}")).json()
        if body.get("status") == "ready":
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"audience {audience_id} not ready in {timeout}s")


async def produce(
    bootstrap: str,
    records: list[tuple[bytes, bytes]],
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Send records to user.events.v1 and wait for every acknowledgement; `rate` paces them so
    the stream is still flowing when a scenario injects its fault."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=2 * 1024 * 1024,
        # The broker may be away for a while in some scenarios: keep retrying rather than fail.
        request_timeout_ms=120_000,
    )
    await producer.start()
    started = time.monotonic()
    try:
        chunk = 500
        for start in range(0, len(records), chunk):
            if rate:
                delay = started + start / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            part = records[start : start + chunk]
            futures = [await producer.send(Topic.USER_EVENTS, value=v, key=k) for k, v in part]
            await asyncio.gather(*futures)
            if progress:
                progress(start + len(part))
    finally:
        await producer.stop()


def wire_records(stream: Stream) -> list[tuple[bytes, bytes]]:
    return [
        (f"{e['project_id']}/{e['user_id']}".encode(), json.dumps(e).encode())
        for e in stream.events
    ]


@dataclass
class HttpSendStats:
    """What the ingestion endpoint answered while a stream was sent through it."""

    accepted: int = 0
    accepted_events: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    missing_retry_after: int = 0
    transport_errors: int = 0


async def send_http(
    h: Harness,
    project: Project,
    stream: Stream,
    batch: int = 100,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
    rate: float | None = None,
) -> HttpSendStats:
    """Send a stream through POST /v1/events and /v1/identify as a well-behaved producer does:
    every event carries its own event_id, and a batch that was not accepted (503, 429, a broken
    connection) is retried as is, after Retry-After, until it is. `rate` paces the batches."""
    stats = HttpSendStats()
    started = time.monotonic()
    chunks = [stream.events[i : i + batch] for i in range(0, len(stream.events), batch)]
    queue: asyncio.Queue[tuple[int, list[dict[str, Any]]]] = asyncio.Queue()
    for index, chunk in enumerate(chunks):
        queue.put_nowait((index, chunk))
    sent = 0

    async def post(client: httpx.AsyncClient, path: str, items: list[dict[str, Any]]) -> None:
        while True:
            try:
                response = await client.post(path, json={"batch": [http_item(e) for e in items]})
            except httpx.TransportError:
                stats.transport_errors += 1
                await asyncio.sleep(1)
                continue
            stats.statuses[response.status_code] += 1
            if response.status_code == 202:
                stats.accepted += len(items)
                stats.accepted_events.extend(items)
                return
            error = response.json().get("error", {}) if response.content else {}
            stats.codes[f"{response.status_code} {error.get('code')}"] += 1
            if response.status_code not in (429, 503):
                return  # refused for good: never accepted, so not in the oracle's log
            retry_after = response.headers.get("retry-after")
            if retry_after is None:
                stats.missing_retry_after += 1
            await asyncio.sleep(min(float(retry_after or 1), 2))

    async def worker() -> None:
        nonlocal sent
        async with h.client(project.key, timeout=60) as client:
            while not queue.empty():
                index, chunk = queue.get_nowait()
                if rate:
                    due = started + index * batch / rate
                    if (delay := due - time.monotonic()) > 0:
                        await asyncio.sleep(delay)
                tracks = [e for e in chunk if e["type"] == "track"]
                identifies = [e for e in chunk if e["type"] == "identify"]
                if tracks:
                    await post(client, "/v1/events", tracks)
                if identifies:
                    await post(client, "/v1/identify", identifies)
                sent += len(chunk)
                if progress:
                    progress(sent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


async def group_lag(bootstrap: str, group: str) -> int:
    """Records on user.events.v1 the evaluators' group has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        partitions = [
            TopicPartition(Topic.USER_EVENTS, p) for p in range(PARTITIONS[Topic.USER_EVENTS])
        ]
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await consumer.end_offsets(partitions)
        return sum(
            ends[tp] - max(committed[tp].offset if tp in committed else 0, 0) for tp in partitions
        )
    finally:
        await consumer.stop()
        await admin.close()


async def committed(h: Harness) -> int:
    """Records on user.events.v1 the evaluators' group has committed so far."""
    admin = AIOKafkaAdminClient(bootstrap_servers=h.bootstrap)
    await admin.start()
    try:
        partitions = [
            TopicPartition(Topic.USER_EVENTS, p) for p in range(PARTITIONS[Topic.USER_EVENTS])
        ]
        offsets = await admin.list_consumer_group_offsets(h.group, partitions=partitions)
        return sum(max(o.offset, 0) for o in offsets.values())
    finally:
        await admin.close()


async def wait_committed(h: Harness, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await committed(h) < target:
        await asyncio.sleep(0.5)


async def actual_members(h: Harness, project: Project) -> dict[str, set[str]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        h.mongo_url, serverSelectionTimeoutMS=5_000
    )
    try:
        db = client[h.database]
        out: dict[str, set[str]] = {}
        for name, audience_id in project.audiences.items():
            docs = db.profiles.find({"audiences": audience_id}, {"user_id": 1})
            out[name] = {str(doc["user_id"]) async for doc in docs}
        return out
    finally:
        await client.close()


async def counts(h: Harness, project: Project) -> dict[str, int]:
    async with h.client(project.key) as client:
        return {
            name: int((await checked(client.get(f"/v1/audiences/{aid}/count"), 200))["count"])
            for name, aid in project.audiences.items()
        }


async def membership_changes(h: Harness, project_id: str) -> list[dict[str, Any]]:
    """Every change on membership.changes.v1 for the project, up to the topic's current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=h.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        topic = Topic.MEMBERSHIP_CHANGES
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS[topic])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[dict[str, Any]] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    value = json.loads(record.value)
                    if value.get("project_id") == project_id:
                        found.append(value)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return found
    finally:
        await consumer.stop()


async def converge(
    h: Harness, project: Project, expected: dict[str, set[str]], timeout: float
) -> float | None:
    """Wait until the memberships equal the oracle and the group has nothing left to read;
    returns when that happened (monotonic), or None at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await actual_members(h, project) == expected and (
                await group_lag(h.bootstrap, h.group) == 0
            ):
                return time.monotonic()
        except Exception:
            pass
        await asyncio.sleep(1)
    return None


async def measure(
    h: Harness,
    project: Project,
    sent: list[dict[str, Any]],
    name: str,
    fault_lifted: float,
    timeout: float,
    events_sent: int | None = None,
) -> ScenarioResult:
    """Wait for convergence, then compare memberships, counts and the change topic with the
    oracle's replay of `sent` (every event the system accepted)."""
    expected = expected_members(sent)
    converged = await converge(h, project, expected, timeout)
    await asyncio.sleep(2)  # the outbox publishes its changes just after the store writes
    actual = await actual_members(h, project)
    counted = await counts(h, project)
    changes = await membership_changes(h, project.id)
    by_audience = {aid: oracle_name for oracle_name, aid in project.audiences.items()}
    net: Counter[tuple[str, str]] = Counter()
    seen_ids: set[str] = set()
    replayed = 0
    for change in changes:
        if change["event_id"] in seen_ids:
            replayed += 1  # a replay after a crash carries the same id: consumers dedupe it
            continue
        seen_ids.add(change["event_id"])
        pair = (by_audience.get(change["audience_id"], "?"), change["user_id"])
        net[pair] += 1 if change["type"] == "membership.entered" else -1
    result = ScenarioResult(
        scenario=name,
        events_sent=len(sent) if events_sent is None else events_sent,
        expected=sum(len(v) for v in expected.values()),
        actual=sum(len(v) for v in actual.values()),
        lost=sum(len(expected[a] - actual.get(a, set())) for a in expected),
        duplicated=0,
        recovery_s=None if converged is None else max(converged - fault_lifted, 0.0),
    )
    extra = sum(len(actual.get(a, set()) - expected[a]) for a in expected)
    topic_extra = sum(n - 1 for n in net.values() if n > 1)
    drift = sum(abs(counted[a] - len(actual[a])) for a in actual)
    result.duplicated = extra + topic_extra + drift
    topic_wrong = sum(
        1
        for a, users in actual.items()
        for user in users
        if net[(a, user)] != 1  # a subscriber replaying the topic would not see this member
    ) + sum(1 for (a, user), n in net.items() if n < 0 or (n == 1 and user not in actual[a]))
    if topic_wrong:
        result.violations.append(f"{topic_wrong} members disagree with membership.changes.v1")
    if converged is None:
        result.violations.append(f"did not converge within {timeout:.0f}s")
    result.notes |= {
        "unexpected_members": extra,
        "entries_beyond_one": topic_extra,
        "count_drift": drift,
        "changes_replayed_same_id": replayed,
    }
    return result
