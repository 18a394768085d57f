"""Resolve benchmark: campaign resolution latency at a fixed request rate vs the /healthz floor.

Starts a fresh broker, store and one gateway, loads 10,000 profiles and a campaign of 10
audiences (filters on traits and event counts, an entitlement check, frequency caps, and an
experiment on the last audience so most users walk the whole priority list), then offers resolve
requests open-loop at --rate per second while /healthz is probed on the same server in the same
run. Latency is measured from each request's scheduled start, so a stalled server is not hidden
by a client that waits for it.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from rich.console import Console
from rich.table import Table

from bench.infra import ROOT, fresh_infrastructure, percentile

console = Console()
API_PORT = 39201
DATABASE = "bench_resolve"

AUDIENCES: list[dict[str, Any]] = [
    {"filters": [{"field": "plan", "operator": "is", "value": "enterprise"}]},
    {
        "filters": [
            {"field": "country", "operator": "in", "value": ["JP", "KR"]},
            {"field": "age", "operator": "gte", "value": 60},
        ],
        "frequency_cap": "1/day",
    },
    {"filters": [{"field": "email", "operator": "contains", "value": "@corp.example"}]},
    {
        "filters": [{"field": "events.purchase.count", "operator": "gte", "value": 50}],
        "entitlement_check": "pro",
    },
    {"filters": [{"field": "event_count", "operator": "gt", "value": 10_000}]},
    {
        "filters": [
            {"field": "plan", "operator": "is", "value": "team"},
            {"field": "country", "operator": "is", "value": "BR", "conjunction": "and"},
            {"field": "app_version", "operator": "lt", "value": 2, "conjunction": "or"},
        ],
        "frequency_cap": "3/week",
    },
    {"filters": [{"field": "churn_risk", "operator": "exists", "value": True}]},
    {"filters": [{"field": "country", "operator": "not_in", "value": ["US", "DE", "FR", "BR"]}]},
    {
        "filters": [{"field": "events.app_open.count", "operator": "lt", "value": 2}],
        "frequency_cap": "2/session",
    },
    {
        "filters": [],
        "frequency_cap": "5/day",
        "experiment": {
            "variants": [
                {"paywall_id": "pw_control", "traffic_percentage": 45},
                {"paywall_id": "pw_new", "traffic_percentage": 45},
            ]
        },
    },
]


def profiles(project_id: str, users: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    docs = []
    for n in range(users):
        opens = rng.randrange(0, 40)
        purchases = rng.randrange(0, 4)
        docs.append(
            {
                "_id": f"{project_id}/u{n}",
                "project_id": project_id,
                "user_id": f"u{n}",
                "traits": {
                    "plan": rng.choice(["free", "premium", "team"]),
                    "country": rng.choice(["US", "DE", "FR", "BR"]),
                    "age": rng.randrange(16, 60),
                    "email": f"u{n}@example.com",
                    "entitlements": ["pro"] if rng.random() < 0.2 else [],
                },
                "event_count": opens + purchases,
                "events": {
                    "app_open": {"count": opens, "last_at": now - timedelta(hours=1)},
                    "purchase": {"count": purchases, "last_at": now - timedelta(days=3)},
                },
                "audiences": [],
                "version": 1,
            }
        )
    return docs


def start_api(env: dict[str, str], admin_key: str, log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "audience_api.main"],
        env={
            **env,
            "AUDIENCES_PORT": str(API_PORT),
            "AUDIENCES_MONGO_DATABASE": DATABASE,
            "AUDIENCES_BOOTSTRAP_API_KEY": admin_key,
            "AUDIENCES_LOG_LEVEL": "WARNING",
            "AUDIENCES_RATE_LIMIT_PER_SECOND": "1000000",
            "AUDIENCES_RATE_LIMIT_BURST": "1000000",
        },
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def wait_ready(base: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the gateway at {base} was not ready in {timeout}s")


async def set_up(base: str, admin_key: str, url: str, users: int) -> tuple[str, str, str]:
    """A project, its key, a campaign of 10 audiences, and the users' profiles."""
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    ) as admin:
        project = (await admin.post("/v1/projects", json={"name": "bench"})).json()["id"]
        created_key = await admin.post(
            "/v1/keys",
            json={"project_id": project, "rate_limit": {"per_second": 100_000, "burst": 100_000}},
        )
        if created_key.status_code != 201:
            raise RuntimeError(f"could not create the bench key: {created_key.text}")
        key = created_key.json()["key"]
        prefix = f"/v1/projects/{project}/campaigns"
        campaign = (await admin.post(prefix, json={"name": "bench"})).json()["id"]
        for n, audience in enumerate(AUDIENCES):
            created = await admin.post(
                f"{prefix}/{campaign}/audiences",
                json={"name": f"audience {n}", "paywall_id": f"pw_{n}", **audience},
            )
            if created.status_code != 201:
                raise RuntimeError(f"could not create audience {n}: {created.text}")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    docs = profiles(project, users)
    for start in range(0, len(docs), 1000):
        await client[DATABASE].profiles.insert_many(docs[start : start + 1000])
    await client.close()
    return project, key, campaign


async def offer(
    client: httpx.AsyncClient,
    rate: int,
    seconds: float,
    request: Any,
    in_flight: int,
) -> tuple[list[float], int]:
    """Open loop: request n is due at start + n/rate; latency counts from its due time.

    At most `in_flight` requests are outstanding (the client's pool size): thousands of requests
    queued inside httpx's pool make the client, not the server, the bottleneck. A request that
    waits for a free slot still counts the wait, since its clock started when it was due.
    """
    latencies: list[float] = []
    errors = 0
    slots = asyncio.Semaphore(in_flight)
    started = time.perf_counter()

    async def one(n: int, due: float) -> None:
        nonlocal errors
        async with slots:
            try:
                response = await request(client, n)
            except httpx.HTTPError:
                errors += 1
                return
        if response.status_code != 200:
            errors += 1
            return
        latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    for n in range(int(rate * seconds)):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    return latencies, errors


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    base: str, key: str, project: str, campaign: str, args: argparse.Namespace, api_pid: int
) -> dict[str, Any]:
    path = f"/v1/projects/{project}/campaigns/{campaign}/resolve"
    run = secrets.token_hex(4)

    async def resolve(client: httpx.AsyncClient, n: int) -> httpx.Response:
        body: dict[str, Any] = {"user_id": f"u{n % args.users}", "session_id": f"s{n % 97}"}
        if args.request_ids:
            body["request_id"] = f"{run}-{n}"
        return await client.post(path, json=body)

    async def healthz(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.get("/healthz")

    limits = httpx.Limits(max_connections=args.in_flight, max_keepalive_connections=args.in_flight)
    headers = {"Authorization": f"Bearer {key}"}
    # Two clients, so /healthz probes never queue behind resolves on the client side.
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as client,
        httpx.AsyncClient(base_url=base, timeout=30) as prober,
    ):
        console.print("warming up …")
        await offer(client, min(args.rate, 100), 3, resolve, args.in_flight)
        console.print(
            f"offering {args.rate} resolves/s and {args.health_rate} /healthz/s "
            f"for {args.seconds}s …"
        )
        cpu_before, wall_before = cpu_seconds(api_pid), time.perf_counter()
        (resolves, resolve_errors), (floor, floor_errors) = await asyncio.gather(
            offer(client, args.rate, args.seconds, resolve, args.in_flight),
            offer(prober, args.health_rate, args.seconds, healthz, 8),
        )
        wall = time.perf_counter() - wall_before
        cpu = cpu_seconds(api_pid) - cpu_before
    p99 = percentile(resolves, 0.99)
    floor_p99 = percentile(floor, 0.99)
    return {
        "audiences": len(AUDIENCES),
        "users": args.users,
        "offered_per_s": args.rate,
        "seconds": args.seconds,
        "request_ids": args.request_ids,
        "in_flight_limit": args.in_flight,
        "resolves": len(resolves),
        # Completed per second over the whole phase: below the offered rate, the server (or the
        # machine it shares) is saturated and the latencies are mostly queueing.
        "achieved_per_s": round((len(resolves) + len(floor)) / wall, 1),
        "gateway_cpu_ms_per_request": round(1000 * cpu / max(1, len(resolves) + len(floor)), 2),
        "gateway_cpu_share": round(cpu / wall, 2),
        "resolve_errors": resolve_errors,
        "resolve_p50_ms": round(statistics.median(resolves), 2) if resolves else None,
        "resolve_p99_ms": round(p99, 2),
        "healthz_samples": len(floor),
        "healthz_errors": floor_errors,
        "healthz_p50_ms": round(statistics.median(floor), 2) if floor else None,
        "healthz_p99_ms": round(floor_p99, 2),
        "p99_ratio_to_healthz": round(p99 / floor_p99, 2) if floor_p99 else None,
        "target_ratio": 5,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin_key = f"sk_bench_{secrets.token_hex(16)}"
    base = f"http://127.0.0.1:{API_PORT}"
    with fresh_infrastructure("resolve", args.kafka_port, args.store_port) as env:
        log_path = ROOT / ".local" / "bench" / "resolve.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        api = start_api(env, admin_key, log_path)
        try:
            await wait_ready(base)
            project, key, campaign = await set_up(
                base, admin_key, env["AUDIENCES_MONGO_URL"], args.users
            )
            return await measure(base, key, project, campaign, args, api.pid)
        finally:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--health-rate", type=int, default=50)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=64, help="outstanding resolves at most")
    parser.add_argument(
        "--request-ids", action="store_true", help="send a request_id (one stored write each)"
    )
    parser.add_argument("--kafka-port", type=int, default=19292)
    parser.add_argument("--store-port", type=int, default=17227)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    table = Table(title="Resolve benchmark")
    for column in ("measure", "value"):
        table.add_column(column)
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)
    out = ROOT / ".local" / "bench" / "resolve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
