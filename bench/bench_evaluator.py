"""Evaluator benchmark: sustained events/s and event-to-membership latency vs raw limits.

Produces 200,000 events for 50,000 users against 50 audiences of mixed kinds to a real broker,
and measures in the same run the two raw limits: a plain aiokafka consumer reading the same
topic, and plain unordered bulk upserts of profile documents into the same store. Then offers
events at a fixed rate, three times: the same workload (with timed probes in it), new users only
(the worst case), and half the measured throughput (latency without a queue).
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient, UpdateOne
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audience_evaluator.profiles import fold, new_profile, prune
from audience_shared.events import user_event_adapter
from audience_shared.kafka import ensure_topics
from audience_shared.rules import parse_criteria
from audience_shared.store import bulk_write_chunked
from audience_shared.topics import Topic
from bench.infra import ROOT, fresh_infrastructure, percentile
from bench.steal import stolen_cores

console = Console()
PROJECT = "prj_bench"
GROUP = "bench-evaluator"
# In the latency phase at the fixed rate, one offered event in this many is a timed probe, a new
# user whose entry into this audience is waited for.
PROBE_EVERY = 20
# The targets: sustained throughput against the slower raw limit, and the workload's p99
# at the fixed offered rate.
TARGET_RATIO = 0.4
TARGET_P99_MS = 500
PROBED_AUDIENCE = b"aud_bench000"
PROBE_TRAITS = {"plan": "premium"}
# The load generator sends what fell due every OFFER_TICK_S, one batch per partition, as a
# producer lingering that long would. Every 5 ms it cost the broker and itself about 30 % of a
# core on the two the evaluators share (20 ms: 12 %); a probe's latency still counts from when it
# fell due, so the wait for the next tick is measured, as a producer's linger would be.
OFFER_TICK_S = 0.02
OFFER_PARTITIONER = DefaultPartitioner()

AUDIENCES = [
    "Users with plan=premium",
    "Users with plan=free",
    "Users from country=US AND plan=premium",
    "Users from country=DE OR country=FR",
    "Users with age >= 30",
    "Users with age < 25 AND plan=premium",
    "Users with email",
    "Users with plan in (premium, team)",
    "Users who triggered event=app_open more than 10 times",
    "Users who triggered event=app_open at least 3 times",
    "Users who completed purchase in the last 30 days",
    "Users who did not purchase in the last 30 days",
    "Users who made purchase at least 2 times in the last 7 days",
    "Users who did page_view in the last 1 days",
    "Users with plan=premium AND last_active within 7 days",
    "Users who did app_open in the last 12 hours",
    "Users with country != US",
    "Users who triggered event=share at least 1 times",
    "Users with signup_date before 2024-01-01",
    "Users with signup_date after 2025-06-01 AND plan=free",
]


def audience_docs(count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    docs = []
    for n in range(count):
        criteria = AUDIENCES[n % len(AUDIENCES)]
        if n >= len(AUDIENCES):
            criteria = f"{criteria} AND country != XX{n}"  # distinct rules, same cost class
        rule = parse_criteria(criteria)
        docs.append(
            {
                "_id": f"aud_bench{n:03d}",
                "project_id": PROJECT,
                "name": f"bench {n}",
                "kind": "dynamic",
                "type": "events",
                "input": {"form": "criteria", "value": criteria},
                "criteria": criteria,
                "rule": rule.model_dump(mode="json"),
                "rule_version": 1,
                "refresh_schedule": "realtime",
                "archived": False,
                "created_at": now,
                "updated_at": now,
            }
        )
    return docs


def make_events(
    events: int, users: int, seed: int = 11, first_id: int = 0
) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for n in range(events):
        user = f"u{rng.randrange(users)}"
        at = (now - timedelta(seconds=rng.randrange(0, 40 * 86400))).isoformat()
        roll = rng.random()
        body: dict[str, Any] = {
            "project_id": PROJECT,
            "user_id": user,
            "timestamp": at,
            "event_id": f"b{first_id + n}",
        }
        if roll < 0.25:
            body |= {
                "type": "identify",
                "traits": {
                    "plan": rng.choice(["free", "premium", "team"]),
                    "country": rng.choice(["US", "DE", "FR", "BR", "IN"]),
                    "age": rng.randrange(16, 70),
                    "email": f"{user}@example.com",
                    "signup_date": f"20{rng.randrange(20, 26)}-0{rng.randrange(1, 10)}-15",
                },
            }
        else:
            body |= {
                "type": "track",
                "event": rng.choice(
                    ["app_open"] * 5 + ["purchase", "page_view", "page_view", "share"]
                ),
                "properties": {"amount": rng.randrange(1, 200)},
            }
        out.append((f"{PROJECT}/{user}".encode(), json.dumps(body).encode()))
    return out


async def produce(bootstrap: str, records: list[tuple[bytes, bytes]], label: str) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        with progress() as bar:
            task = bar.add_task(label, total=len(records))
            for start in range(0, len(records), 5000):
                chunk = records[start : start + 5000]
                futures = [await producer.send(Topic.USER_EVENTS, value=v, key=k) for k, v in chunk]
                await asyncio.gather(*futures)
                bar.advance(task, len(chunk))
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


async def raw_consume(bootstrap: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(
        Topic.USER_EVENTS,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)  # the evaluator must at least decode each record
                seen += sum(len(r) for r in batches.values())
    finally:
        await consumer.stop()
    return expected / (time.perf_counter() - started)


def profile_documents(records: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """The profile documents these events make, folded by the evaluator's own code: the raw
    store limit is measured on exactly what the evaluator has to write."""
    profiles: dict[str, dict[str, Any]] = {}
    now = datetime.now(UTC)
    for _key, value in records:
        event = user_event_adapter.validate_json(value)
        profile = profiles.get(event.user_id)
        if profile is None:
            profile = profiles[event.user_id] = new_profile(event.project_id, event.user_id)
        fold(profile, event, (), now)
    for profile in profiles.values():
        prune(profile, now)
    return list(profiles.values())


async def raw_upserts(url: str, documents: list[dict[str, Any]]) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    collection = client["bench_raw"].profiles
    await collection.drop()
    started = time.perf_counter()
    # Same command size as the evaluator's writes (BULK_CHUNK): the store's real limit.
    ops = [
        UpdateOne(
            {"_id": doc["_id"]}, {"$set": {k: v for k, v in doc.items() if k != "_id"}}, upsert=True
        )
        for doc in documents
    ]
    await bulk_write_chunked(collection, ops)
    rate = len(documents) / (time.perf_counter() - started)
    await client.close()
    return rate


async def group_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> int:
    committed = await admin.list_consumer_group_offsets(GROUP, partitions=partitions)
    ends = await consumer.end_offsets(partitions)
    return sum(
        ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
        for tp in partitions
    )


EVALUATOR_PORT = 18001


def start_evaluator(
    env: dict[str, str], log_path: Path, port: int = EVALUATOR_PORT
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "audience_evaluator.main"],
        env={
            **env,
            "AUDIENCES_PORT": str(port),
            "AUDIENCES_CONSUMER_GROUP": GROUP,
            "AUDIENCES_MONGO_DATABASE": "bench",
            "AUDIENCES_LOG_LEVEL": "WARNING",
        },
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def build_audiences(env: dict[str, str], url: str, count: int) -> None:
    """Let an evaluator build the audiences while the store is empty, as when they are defined
    before traffic arrives, then stop it: the run then measures event processing alone."""
    log_path = ROOT / ".local" / "bench" / "evaluator-build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    evaluator = start_evaluator(env, log_path)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        with progress() as bar:
            task = bar.add_task("building audiences", total=count)
            while True:
                ready = await client["bench"].audience_state.count_documents({"status": "ready"})
                bar.update(task, completed=ready)
                if ready >= count:
                    return
                if evaluator.poll() is not None:
                    raise RuntimeError(f"the evaluator exited; see {log_path}")
                await asyncio.sleep(0.5)
    finally:
        await client.close()
        os.killpg(evaluator.pid, signal.SIGTERM)
        evaluator.wait(timeout=30)


@contextlib.asynccontextmanager
async def lag_probe(bootstrap: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Yields a function that reads the evaluator group's total lag on the user-events topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        (described,) = await admin.describe_topics([Topic.USER_EVENTS])
        partitions = [
            TopicPartition(Topic.USER_EVENTS, p["partition"]) for p in described["partitions"]
        ]
        assert partitions, f"no partitions for {Topic.USER_EVENTS}: {described}"
        yield lambda: group_lag(admin, consumer, partitions)
    finally:
        await consumer.stop()
        await admin.close()


async def sustained(bootstrap: str, total: int) -> float:
    """Events/s from the first committed progress to zero lag."""
    first_progress: tuple[float, int] | None = None
    async with lag_probe(bootstrap) as group_lag_now:
        with progress() as bar:
            task = bar.add_task("evaluator consuming", total=total)
            while True:
                try:
                    lag = await group_lag_now()
                except KafkaError:  # the group's coordinator is not elected yet: ask again
                    await asyncio.sleep(0.5)
                    continue
                done = total - lag
                bar.update(task, completed=done)
                now = time.perf_counter()
                if first_progress is None and done > 0:
                    first_progress = (now, done)
                if lag <= 0 and first_progress is not None:
                    return (total - first_progress[1]) / max(now - first_progress[0], 1e-6)
                await asyncio.sleep(0.25)


async def drained(bootstrap: str, timeout_s: float = 900) -> None:
    """Wait until the evaluator's group has no lag left."""
    deadline = time.monotonic() + timeout_s
    async with lag_probe(bootstrap) as group_lag_now:
        while time.monotonic() < deadline and await group_lag_now() > 0:
            await asyncio.sleep(0.5)


async def latency(
    bootstrap: str,
    rate: int,
    seconds: int,
    first_user: int = 0,
    mix: list[tuple[bytes, bytes]] | None = None,
) -> "Latencies":
    """Offer events at a fixed rate; time publish → membership.entered of the probes among them.

    A probe is a new user's first identify (it enters `aud_bench000`, and about nine other
    audiences with it). With `mix`, one event in PROBE_EVERY is a probe and the others are the
    mix, the benchmark's workload; without, every event is a probe (a worst case: a new user's
    first event is the most expensive one there is)."""
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    # What exists now (the events, the offered mix) is never garbage: out of the collector's
    # way, so its full collections (100 to 700 ms in this process, measured) do not delay the
    # sends and receipts being timed.
    gc.collect()
    gc.freeze()
    consumer = AIOKafkaConsumer(
        Topic.MEMBERSHIP_CHANGES,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        group_id=None,
        # Fetches held up to 25 ms, as the evaluators' are: each fetch costs the broker (on the
        # same two cores) about 2 ms of CPU, so fetches every 10 ms took it a fifth of a core
        # (measured against an idle topic: 0.24 cores at 100 fetches/s, 0.18 at 40, 0.05 idle).
        # For 64 kB, more than the workload's changes bring in 25 ms, so its wait ends each
        # fetch. The wait only adds to the measured latency (12 ms on average, at most 25).
        fetch_min_bytes=65536,
        fetch_max_wait_ms=25,
    )
    await consumer.start()
    await consumer.seek_to_end()
    await asyncio.sleep(1)

    async def collect() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    # Most changes are for other audiences: skipped before decoding, so the
                    # load generator takes less of the CPU the evaluators share with it.
                    if PROBED_AUDIENCE not in record.value:
                        continue
                    value = json.loads(record.value)
                    user = value["user_id"]
                    if (
                        user in sent
                        and value["audience_id"] == PROBED_AUDIENCE.decode()
                        and user not in received
                    ):
                        received[user] = now

    collector = asyncio.create_task(collect())

    def offered(n: int) -> tuple[bytes, bytes, str | None]:
        """The n-th offered record, and the probe's user if it is one."""
        if mix and n % PROBE_EVERY:
            key, value = mix[n % len(mix)]
            return key, value, None
        user = f"lat{first_user + n}"
        body = {"type": "identify", "project_id": PROJECT, "user_id": user, "traits": PROBE_TRAITS}
        return f"{PROJECT}/{user}".encode(), json.dumps(body).encode(), user

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    partitions = sorted(await producer.partitions_for(Topic.USER_EVENTS))
    total = rate * seconds
    started = time.perf_counter()
    next_n = 0
    with progress() as bar:
        task = bar.add_task(f"offering {rate} events/s", total=total)
        # Each tick sends what fell due since the last one, in one batch per partition built
        # here: per-record sends would make the load generator (on the same two cores) cost
        # more CPU than the evaluators. A probe counts from when it fell due, not from its send.
        while next_n < total:
            await asyncio.sleep(OFFER_TICK_S)
            due_now = min(total, int((time.perf_counter() - started) * rate) + 1)
            batches: dict[int, Any] = {}
            for n in range(next_n, due_now):
                key, value, probe_user = offered(n)
                partition = OFFER_PARTITIONER(key, partitions, partitions)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await producer.send_batch(batch, Topic.USER_EVENTS, partition=partition)
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                if probe_user is not None:
                    sent[probe_user] = started + n / rate
            for partition, batch in batches.items():
                await producer.send_batch(batch, Topic.USER_EVENTS, partition=partition)
            bar.advance(task, due_now - next_n)
            next_n = due_now
    await producer.stop()
    # Every offered event is waited for (a queue the offered rate built is part of the latency):
    # until the evaluators have worked off their backlog, then for the last publishes.
    await drained(bootstrap)
    deadline = time.perf_counter() + 30
    while len(received) < len(sent) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    collector.cancel()
    await consumer.stop()
    by_second: dict[int, list[float]] = {}
    for user in received:
        by_second.setdefault(int(sent[user] - started), []).append(
            (received[user] - sent[user]) * 1000
        )
    latencies = [value for values in by_second.values() for value in values]
    return Latencies(
        p50=statistics.median(latencies) if latencies else float("nan"),
        p99=percentile(latencies, 0.99),
        samples=len(latencies),
        p99_by_second=[round(percentile(by_second[s], 0.99)) for s in sorted(by_second)],
    )


@dataclass(frozen=True)
class Latencies:
    """The probes' latencies in one offered phase, in ms."""

    p50: float
    p99: float
    samples: int
    # The p99 of the probes that fell due in each second of the phase: a stall shows as a few
    # high seconds, a queue as seconds that keep growing.
    p99_by_second: list[int]


def cpu_seconds(processes: dict[str, list[int]]) -> dict[str, float]:
    """User plus system CPU seconds of each group of processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for name, pids in processes.items():
        total = 0.0
        for pid in pids:
            # Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        totals[name] = total
    return totals


def evaluator_ports(count: int) -> list[int]:
    return [EVALUATOR_PORT + n for n in range(count)]


async def metric_samples(ports: list[int], family_name: str) -> list[Any]:
    """The samples of one metric family from every evaluator's /metrics."""
    samples: list[Any] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for port in ports:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(text):
                if family.name == family_name:
                    samples.extend(family.samples)
    return samples


async def mark_checks(ports: list[int]) -> dict[str, int]:
    """How often the evaluators checked the delivered markers before counting, by why."""
    totals: dict[str, int] = {}
    for sample in await metric_samples(ports, "audiences_evaluator_mark_checks"):
        if sample.name.endswith("_total"):
            why = sample.labels["why"]
            totals[why] = totals.get(why, 0) + int(sample.value)
    return totals


# A garbage collection longer than this (a bucket of audiences_evaluator_gc_pause_seconds) is
# reported as slow: a stall every event in the process waits through.
SLOW_GC_BUCKET = "0.05"

# The stages of a batch, in order (publish, count and links run at once).
STAGES = ("fetch", "decode", "read", "evaluate", "write", "publish", "count", "links", "mark")


async def stage_totals(ports: list[int]) -> dict[str, tuple[float, int]]:
    """Seconds and observations so far of each batch stage, of whole batches (`batch`) and
    their sizes (`events`), of garbage collections by generation (`gc0` to `gc2`), and of the
    sweepers' store scans (`sweep_scans`), summed over the evaluators."""
    totals: dict[str, tuple[float, int]] = {}
    families = {
        "audiences_evaluator_stage_seconds": None,
        "audiences_evaluator_batch_seconds": "batch",
        "audiences_evaluator_batch_size": "events",
        "audiences_evaluator_gc_pause_seconds": "gc",
        "audiences_evaluator_sweep_scan_seconds": "sweep_scans",
    }
    for family, name in families.items():
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for sample in await metric_samples(ports, family):
            if name == "gc":
                key = f"gc{sample.labels.get('generation', '')}"
            else:
                key = name or sample.labels.get("stage", "")
            if sample.name.endswith("_sum"):
                sums[key] = sums.get(key, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0) + int(sample.value)
            elif name == "gc" and sample.labels.get("le") == SLOW_GC_BUCKET:
                # `gcN_fast` counts the collections within the bucket (per_batch calls the rest
                # slow); its seconds are not known, so 0, which nothing reads.
                sums[f"{key}_fast"] = 0.0
                counts[f"{key}_fast"] = counts.get(f"{key}_fast", 0) + int(sample.value)
        totals |= {key: (sums[key], counts.get(key, 0)) for key in sums}
    return totals


def per_batch(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]]) -> str:
    """Where a phase's batches went: their count and mean size, then each stage's mean ms per
    batch (a stage some batches skip, such as fetch, is averaged over all of them)."""
    batches = after.get("batch", (0.0, 0))[1] - before.get("batch", (0.0, 0))[1]
    if not batches:
        return "no batches"

    def delta(key: str) -> float:
        return after.get(key, (0.0, 0))[0] - before.get(key, (0.0, 0))[0]

    def collections(key: str) -> int:
        return after.get(key, (0.0, 0))[1] - before.get(key, (0.0, 0))[1]

    parts = [f"{batches} batches of {delta('events') / batches:.0f} events"]
    parts += [f"{key} {delta(key) / batches * 1000:.1f}" for key in ("batch", *STAGES)]

    def pauses(generation: int) -> str:
        count = collections(f"gc{generation}")
        slow = count - collections(f"gc{generation}_fast")
        mean_ms = delta(f"gc{generation}") / max(count, 1) * 1000
        return f"{count} x {mean_ms:.1f} ({slow} over {float(SLOW_GC_BUCKET) * 1000:.0f} ms)"

    # Every event in the process waits while the collector runs: by generation, how many
    # collections, their mean pause and how many were long (the evaluators collect the young
    # generations between batches, see garbage.py; generation 2 is a collection of everything).
    gc = ", ".join(pauses(generation) for generation in range(3))
    # A sweeper's scan of the store reads every profile (FerretDB has no due_at index).
    scans = f"sweeper store scans {collections('sweep_scans')} ({delta('sweep_scans'):.1f} s)"
    return (
        ", ".join(parts)
        + f" (ms per batch); gc collections by generation: count x mean ms {gc}; "
        + scans
    )


async def store_time(ports: list[int], top: int = 8) -> dict[str, float]:
    """The store command seconds the evaluators spent, by command and collection, largest first."""
    totals: dict[str, float] = {}
    for sample in await metric_samples(ports, "audiences_store_command_seconds"):
        if sample.name.endswith("_sum"):
            key = f"{sample.labels['command']} {sample.labels['collection']}"
            totals[key] = totals.get(key, 0.0) + sample.value
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return {key: round(value, 1) for key, value in ranked}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with fresh_infrastructure("evaluator", 19192, 17127) as env:
        bootstrap, url = env["AUDIENCES_KAFKA_BOOTSTRAP"], env["AUDIENCES_MONGO_URL"]
        for _ in range(60):  # the broker accepts connections a moment after it listens
            try:
                await ensure_topics(bootstrap)
                break
            except KafkaError:
                await asyncio.sleep(1)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        await client["bench"].audiences.insert_many(audience_docs(args.audiences))
        await client.close()
        await build_audiences(env, url, args.audiences)
        records = make_events(args.events, args.users)
        produce_rate = await produce(bootstrap, records, "producing events")
        console.print("measuring raw limits …")
        consume_rate = await raw_consume(bootstrap, len(records))
        upsert_rate = await raw_upserts(url, profile_documents(records))
        # One evaluator process per core by default: a process alternates between its own CPU
        # work and waiting on the store, so a second one (same consumer group, its share of the
        # partitions) keeps both busy, as a deployment on this machine would.
        evaluators = [
            start_evaluator(env, ROOT / ".local" / "bench" / f"evaluator-{n}.log", port)
            for n, port in enumerate(evaluator_ports(args.evaluators))
        ]
        run_dir = Path(env["AUDIENCES_LOCAL_DIR"]) / "run"
        processes = {
            "evaluators": [evaluator.pid for evaluator in evaluators],
            "store": [int((run_dir / "store.pid").read_text())],
            "broker": [int((run_dir / "kafka.pid").read_text())],
            "load_generator": [os.getpid()],
        }
        try:
            cpu_before = cpu_seconds(processes)
            events_per_s = await sustained(bootstrap, len(records))
            cpu_used = {
                name: round(after - cpu_before[name], 1)
                for name, after in cpu_seconds(processes).items()
            }
            # The benchmark's own workload (fresh events for the same users) at the fixed rate.
            mix = make_events(args.rate * args.seconds, args.users, seed=12, first_id=args.events)
            ports = evaluator_ports(args.evaluators)
            stages = [await stage_totals(ports)]
            phase_cpu, phase_started = cpu_seconds(processes), time.perf_counter()
            workload = await latency(bootstrap, args.rate, args.seconds, mix=mix)
            phase_s = time.perf_counter() - phase_started
            stages.append(await stage_totals(ports))
            # Cores each part used in the workload phase (offering, then working off its queue).
            workload_cores = {
                name: round((after - phase_cpu[name]) / phase_s, 2)
                for name, after in cpu_seconds(processes).items()
            }
            # The worst case at the same rate: every event a new user's first.
            await drained(bootstrap)
            stages.append(await stage_totals(ports))
            new_users = await latency(
                bootstrap, args.rate, args.seconds, first_user=args.rate * args.seconds
            )
            stages.append(await stage_totals(ports))
            # Also below saturation: latency where the evaluator keeps up, not queueing (once
            # the backlog the fixed rate left is worked off): the workload at half the sustained
            # throughput. (New users only at that rate were not below saturation: each costs
            # about twice a workload event, and the phase queued up on a fast machine.)
            await drained(bootstrap)
            light_rate = max(int(events_per_s / 2), 1)
            light_mix = make_events(
                light_rate * args.seconds,
                args.users,
                seed=13,
                first_id=args.events + args.rate * args.seconds,
            )
            stages.append(await stage_totals(ports))
            light = await latency(
                bootstrap,
                light_rate,
                args.seconds,
                first_user=2 * args.rate * args.seconds,
                mix=light_mix,
            )
            stages.append(await stage_totals(ports))
            store_seconds = await store_time(evaluator_ports(args.evaluators))
            checks = await mark_checks(evaluator_ports(args.evaluators))
        finally:
            for evaluator in evaluators:
                os.killpg(evaluator.pid, signal.SIGTERM)
            for evaluator in evaluators:
                evaluator.wait(timeout=30)
    slowest = min(consume_rate, upsert_rate)
    return {
        "events": args.events,
        "users": args.users,
        "audiences": args.audiences,
        "evaluators": args.evaluators,
        "steal_percent": args.steal,
        "events_per_s": round(events_per_s, 1),
        # CPU seconds each part used while the backlog was worked off (two cores in all).
        "cpu_s_evaluators": cpu_used["evaluators"],
        "cpu_s_store": cpu_used["store"],
        "cpu_s_broker": cpu_used["broker"],
        "cpu_s_load_generator": cpu_used["load_generator"],
        "raw_produce_per_s": round(produce_rate, 1),
        "raw_consume_per_s": round(consume_rate, 1),
        "raw_store_upserts_per_s": round(upsert_rate, 1),
        "ratio_to_slowest_raw": round(events_per_s / slowest, 3),
        "target_ratio": TARGET_RATIO,
        "offered_per_s": args.rate,
        # How hard the fixed rate presses this machine: every event writes its profile, so the
        # nearer the rate comes to what the store takes as plain upserts, the more queueing
        # sets the p99 (see docs/benchmarks.md, "Where the latency target holds").
        "offered_share_of_raw_store": round(args.rate / upsert_rate, 3),
        "latency_samples": workload.samples,
        "p50_ms": round(workload.p50, 1),
        "p99_ms": round(workload.p99, 1),
        "target_p99_ms": TARGET_P99_MS,
        "targets_met": targets_met(round(events_per_s / slowest, 3), round(workload.p99, 1)),
        "probe_every": PROBE_EVERY,
        # Cores each part used during the workload phase (of the machine's two).
        "cores_evaluators": workload_cores["evaluators"],
        "cores_store": workload_cores["store"],
        "cores_broker": workload_cores["broker"],
        "cores_load_generator": workload_cores["load_generator"],
        "new_users_latency_samples": new_users.samples,
        "new_users_p50_ms": round(new_users.p50, 1),
        "new_users_p99_ms": round(new_users.p99, 1),
        "light_offered_per_s": light_rate,
        "light_latency_samples": light.samples,
        "light_p50_ms": round(light.p50, 1),
        "light_p99_ms": round(light.p99, 1),
        # Each phase's p99 second by second (by when the probes fell due).
        "p99_ms_by_second": workload.p99_by_second,
        "new_users_p99_ms_by_second": new_users.p99_by_second,
        "light_p99_ms_by_second": light.p99_by_second,
        # Where each phase's batches went (from the evaluators' stage metrics).
        "batches_workload": per_batch(stages[0], stages[1]),
        "batches_new_users": per_batch(stages[2], stages[3]),
        "batches_light": per_batch(stages[4], stages[5]),
        # Counts that checked the delivered markers first (a late delivery, a replayed outbox).
        "mark_checks_late": checks.get("late", 0),
        "mark_checks_replayed": checks.get("replayed", 0),
        # Where the evaluators' store time went (seconds summed over concurrent commands).
        "store_seconds": store_seconds,
    }


def targets_met(ratio: float, p99_ms: float) -> dict[str, bool]:
    """Whether the figures as reported (rounded) meet the issue's targets."""
    return {"ratio": ratio >= TARGET_RATIO, "p99": p99_ms <= TARGET_P99_MS}


def verdict(result: dict[str, Any]) -> str:
    """One line per target: the figure, the target, and whether it was met."""

    def mark(met: bool) -> str:
        return "[green]met[/]" if met else "[red]missed[/]"

    met = result["targets_met"]
    return (
        f"throughput: {result['ratio_to_slowest_raw']:.2f} of the slower raw limit "
        f"(target ≥ {result['target_ratio']}) {mark(met['ratio'])}\n"
        f"latency: p99 {result['p99_ms']:.1f} ms at {result['offered_per_s']:,} events/s "
        f"(target ≤ {result['target_p99_ms']} ms) {mark(met['p99'])}; that rate is "
        f"{result['offered_share_of_raw_store']:.0%} of this machine's raw store limit"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--audiences", type=int, default=50)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--evaluators", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--steal",
        type=int,
        default=0,
        help="percent of every core taken by a real-time neighbour: a slower machine (root)",
    )
    args = parser.parse_args()
    with stolen_cores(args.steal):
        result = asyncio.run(run(args))
    table = Table(title="Evaluator benchmark")
    for column in ("measure", "value"):
        table.add_column(column)
    for key, value in result.items():
        if key == "targets_met":
            continue
        if isinstance(value, list):
            table.add_row(key, " ".join(str(item) for item in value))
        elif key != "store_seconds":
            table.add_row(key, str(value))
    for name, seconds in result["store_seconds"].items():
        table.add_row(f"store s: {name}", str(seconds))
    console.print(table)
    console.print(verdict(result))
    out = ROOT / ".local" / "bench" / "evaluator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
