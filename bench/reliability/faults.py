"""Scenarios 1-4 and 7: processes killed, the broker or the store stopped, a faulty network, a
rebalance, each in the middle of a stream of events."""

import asyncio
import time
from urllib.parse import urlparse

import httpx

from bench.reliability.harness import (
    Harness,
    ScenarioResult,
    Sizes,
    committed,
    measure,
    produce,
    send_http,
    wait_committed,
    wire_records,
)
from bench.reliability.oracle import http_item, make_stream
from bench.reliability.proxy import FaultProxy


async def evaluator_killed(h: Harness, sizes: Sizes) -> ScenarioResult:
    """1. kill -9 the evaluator three times while it works through the stream."""
    project = await h.new_project("kill -9")
    stream = make_stream(project.id, sizes.kill_events, users=sizes.kill_events // 20, seed=1)
    base = await committed(h)
    producing = asyncio.create_task(produce(h.bootstrap, wire_records(stream)))
    evaluator = h.evaluators[0]
    for fraction in (0.25, 0.5, 0.75):
        await wait_committed(h, base + int(len(stream) * fraction), sizes.converge_timeout_s)
        evaluator.kill()
        await asyncio.sleep(1)
        await asyncio.to_thread(evaluator.start)
    lifted = time.monotonic()
    await producing
    return await measure(
        h, project, stream.events, "1 evaluator kill -9 x3", lifted, sizes.converge_timeout_s
    )


async def broker_stopped(h: Harness, sizes: Sizes) -> ScenarioResult:
    """2. The broker stopped mid-stream while events arrive over HTTP; the gateway answers 503
    with Retry-After and accepts nothing it cannot publish."""
    project = await h.new_project("broker down")
    stream = make_stream(project.id, sizes.stream_events, users=sizes.stream_events // 10, seed=2)
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent = n

    # Paced so the stream runs before, through and after the outage.
    rate = len(stream) / (sizes.outage_s * 2.5)
    sending = asyncio.create_task(send_http(h, project, stream, progress=progress, rate=rate))
    while sent < len(stream) // 4 and not sending.done():
        await asyncio.sleep(0.2)
    await asyncio.to_thread(h.infra, "kafka.sh", "stop")
    down = time.monotonic()
    probe = await _probe_ingest(h, project.key, project.id)
    await asyncio.sleep(max(sizes.outage_s - (time.monotonic() - down), 0))
    await asyncio.to_thread(h.infra, "kafka.sh", "start")
    lifted = time.monotonic()
    stats = await sending
    result = await measure(
        h,
        project,
        stats.accepted_events,
        "2 broker stopped",
        lifted,
        sizes.converge_timeout_s,
        events_sent=len(stream),
    )
    if stats.accepted != len(stream):
        result.violations.append(f"only {stats.accepted} of {len(stream)} events accepted")
    refused = {code: n for code, n in stats.codes.items() if not code.startswith("503")}
    if refused:
        result.violations.append(f"unexpected answers while the broker was down: {refused}")
    if stats.statuses[503] == 0:
        result.violations.append("no 503 seen while the broker was down")
    if stats.missing_retry_after:
        result.violations.append(f"{stats.missing_retry_after} 503s without Retry-After")
    if probe[0] != 503 or probe[1] != "broker_unavailable":
        result.violations.append(f"probe during the outage answered {probe}")
    result.notes |= {
        "answers": {str(k): v for k, v in stats.statuses.items()},
        "error_codes": dict(stats.codes),
        "probe_status": probe[0],
        "probe_code": probe[1],
        "probe_seconds": round(probe[2], 2),
        "transport_errors": stats.transport_errors,
    }
    return result


async def _probe_ingest(h: Harness, key: str, project_id: str) -> tuple[int, str | None, float]:
    """One event posted while the broker is down: how fast and how the gateway answers. It is
    not part of the oracle's log, so a 202 here that came through would show as unexpected."""
    item = http_item(
        {"type": "track", "user_id": "probe", "event": "app_open", "event_id": f"{project_id}-p"}
    )
    started = time.monotonic()
    async with h.client(key, timeout=60) as client:
        try:
            response = await client.post("/v1/events", json=item)
        except httpx.TransportError:
            return 0, "transport_error", time.monotonic() - started
    code = response.json().get("error", {}).get("code") if response.status_code != 202 else None
    if response.status_code == 503 and "retry-after" not in response.headers:
        code = f"{code} (no Retry-After)"
    return response.status_code, code, time.monotonic() - started


async def store_stopped(h: Harness, sizes: Sizes) -> ScenarioResult:
    """3. The store stopped mid-stream and started again."""
    project = await h.new_project("store down")
    stream = make_stream(project.id, sizes.stream_events, users=sizes.stream_events // 10, seed=3)
    rate = len(stream) / (sizes.outage_s * 2.5)
    producing = asyncio.create_task(produce(h.bootstrap, wire_records(stream), rate=rate))
    await asyncio.sleep(sizes.outage_s * 2.5 / 4)
    await asyncio.to_thread(h.infra, "store.sh", "stop")
    await asyncio.sleep(sizes.outage_s)
    await asyncio.to_thread(h.infra, "store.sh", "start")
    lifted = time.monotonic()
    await producing
    return await measure(
        h, project, stream.events, "3 store stopped", lifted, sizes.converge_timeout_s
    )


async def network_faults(h: Harness, sizes: Sizes) -> ScenarioResult:
    """4. Delays, stalls, refused and reset connections between the evaluator and the store."""
    project = await h.new_project("network faults")
    store = urlparse(h.mongo_url)
    proxy = FaultProxy(store.hostname or "127.0.0.1", store.port or 27017)
    await proxy.start()
    proxied = h.evaluator(
        "evaluator-proxied",
        {**h.env, "AUDIENCES_MONGO_URL": f"mongodb://127.0.0.1:{proxy.port}/"},
    )
    for evaluator in h.evaluators:
        evaluator.stop()
    await asyncio.to_thread(proxied.start)
    stream = make_stream(project.id, sizes.stream_events, users=sizes.stream_events // 10, seed=4)
    producing = asyncio.create_task(
        produce(h.bootstrap, wire_records(stream), rate=len(stream) / 30)
    )
    try:
        proxy.delay_s = 0.2  # a slow link
        await asyncio.sleep(5)
        proxy.delay_s = 0.0
        proxy.stall(True)  # a lossy link: nothing gets through for a while
        await asyncio.sleep(8)
        proxy.stall(False)
        for _ in range(3):  # connections reset mid-request
            await asyncio.sleep(2)
            proxy.cut()
        proxy.refusing = True  # the store unreachable
        proxy.cut()
        await asyncio.sleep(5)
        proxy.refusing = False
        lifted = time.monotonic()
        await producing
        result = await measure(
            h, project, stream.events, "4 network faults", lifted, sizes.converge_timeout_s
        )
        result.notes["connections_cut"] = proxy.cuts
        return result
    finally:
        proxied.stop()
        await proxy.stop()
        for evaluator in h.evaluators:
            await asyncio.to_thread(evaluator.start)


async def rebalance(h: Harness, sizes: Sizes) -> ScenarioResult:
    """7. Two evaluators share the partitions; one is killed, then a third joins."""
    project = await h.new_project("rebalance")
    second, third = h.evaluator("evaluator-2"), h.evaluator("evaluator-3")
    await asyncio.to_thread(second.start)
    stream = make_stream(project.id, sizes.stream_events, users=sizes.stream_events // 10, seed=7)
    base = await committed(h)
    producing = asyncio.create_task(
        produce(h.bootstrap, wire_records(stream), rate=len(stream) / 30)
    )
    try:
        await wait_committed(h, base + len(stream) // 3, sizes.converge_timeout_s)
        h.evaluators[0].kill()
        await wait_committed(h, base + 2 * len(stream) // 3, sizes.converge_timeout_s)
        await asyncio.to_thread(third.start)
        lifted = time.monotonic()
        await producing
        return await measure(
            h, project, stream.events, "7 rebalance", lifted, sizes.converge_timeout_s
        )
    finally:
        second.stop()
        third.stop()
        await asyncio.to_thread(h.evaluators[0].start)
