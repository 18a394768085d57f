"""Scenarios 5, 6 and 9: poison records, every event twice and reordered, fuzzed input."""

import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_shared.rules import RuleError, parse_criteria
from audience_shared.topics import Topic
from bench.infra import ROOT
from bench.reliability.harness import (
    Harness,
    ScenarioResult,
    Sizes,
    measure,
    produce,
    send_http,
    wire_records,
)
from bench.reliability.oracle import make_stream

# Over the evaluator's 1 MB record limit, under the broker's own message limit.
HUGE = 1_000_100


def poison_records(project_id: str) -> list[tuple[bytes, bytes]]:
    """One record of each kind no handler can process, each under a key that marks it."""
    good = {"type": "track", "project_id": project_id, "user_id": "x", "event": "app_open"}
    bodies: list[bytes] = [
        b"{not json",
        b"",
        b"null",
        b"[1, 2, 3]",
        b"\xff\xfe\x00garbage",
        json.dumps(good | {"user_id": 123}).encode(),  # wrong types
        json.dumps(good | {"timestamp": "yesterday"}).encode(),
        json.dumps(good | {"properties": "not an object"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "user_id"}).encode(),
        json.dumps(good | {"type": "teleport"}).encode(),  # unknown event type
        json.dumps(good | {"surprise": True}).encode(),  # unknown field
        json.dumps(good | {"properties": {"blob": "x" * HUGE}}).encode(),  # huge
    ]
    return [(f"{project_id}/poison-{n}".encode(), body) for n, body in enumerate(bodies)]


async def dead_letters(h: Harness, project_id: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=h.bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tp = TopicPartition(Topic.DEAD_LETTERS, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[dict[str, Any]] = []
        position = 0
        while position < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in records:
                    position = record.offset + 1
                    letter = json.loads(record.value)
                    if str(letter.get("key") or "").startswith(f"{project_id}/"):
                        found.append(letter)
        return found
    finally:
        await consumer.stop()


async def poison_messages(h: Harness, sizes: Sizes) -> ScenarioResult:
    """5. Poison records interleaved with good ones: dead-lettered, the good ones processed."""
    project = await h.new_project("poison")
    stream = make_stream(
        project.id, sizes.stream_events // 4, users=sizes.stream_events // 40, seed=5
    )
    good = wire_records(stream)
    poison = poison_records(project.id)
    records: list[tuple[bytes, bytes]] = []
    every = max(len(good) // (len(poison) * 3), 1)
    cycle = 0
    for n, record in enumerate(good):
        records.append(record)
        if n % every == 0:  # each poison kind three times, spread through the stream
            records.append(poison[cycle % len(poison)])
            cycle += 1
    started = time.monotonic()
    await produce(h.bootstrap, records)
    result = await measure(
        h,
        project,
        stream.events,
        "5 poison messages",
        started,
        sizes.converge_timeout_s,
        events_sent=len(records),
    )
    letters = await dead_letters(h, project.id)
    poisoned = sum(1 for letter in letters if "/poison-" in str(letter["key"]))
    wrongly = len(letters) - poisoned
    if poisoned != cycle:
        result.violations.append(f"{poisoned} of {cycle} poison records dead-lettered")
    if wrongly:
        result.violations.append(f"{wrongly} good records dead-lettered")
    originals_kept = sum(
        1
        for letter in letters
        if base64.b64decode(letter["payload_b64"]) in {body[:1_000_000] for _, body in poison}
    )
    result.notes |= {
        "poison_sent": cycle,
        "dead_lettered": poisoned,
        "with_original_bytes": originals_kept,
    }
    return result


async def duplicates_reordered(h: Harness, sizes: Sizes) -> ScenarioResult:
    """6. Every event sent twice, and each user's events shuffled."""
    project = await h.new_project("duplicates")
    stream = make_stream(
        project.id, sizes.stream_events // 2, users=sizes.stream_events // 20, seed=6
    )
    records = wire_records(stream) * 2
    random.Random(6).shuffle(records)  # shuffles every user's events among themselves too
    started = time.monotonic()
    await produce(h.bootstrap, records)
    return await measure(
        h,
        project,
        stream.events,
        "6 duplicates + reordering",
        started,
        sizes.converge_timeout_s,
        events_sent=len(records),
    )


# The criteria grammar's vocabulary: the fuzzer strings these together, valid or not.
WORDS = [
    "Users", "with", "from", "who", "whose", "where", "AND", "OR", "NOT", "(", ")", ",", "=",
    "==", "!=", ">", ">=", "<", "<=", "is", "not", "in", "contains", "does", "contain",
    "starts", "ends", "between", "before", "after", "within", "exists", "set", "triggered",
    "performed", "did", "never", "event=app_open", "event", "at", "least", "more", "than",
    "most", "fewer", "exactly", "times", "time", "the", "last", "days", "hours", "7d", "12h",
    "audience", "id", "intent", "score", "subscribed", "to", "plan", "plan=premium", "age",
    "traits.plan", "`odd field`", "5", "-1", "1e999", "0.5", "2024-01-01", "2024-13-45T99:99",
    '"quoted"', "'single'", '"unterminated', "true", "false", "null", "\\", "`", "\x00",
    "9" * 40, "é", "💥",
]  # fmt: skip
criteria_text = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join),
    st.text(max_size=200),
    st.lists(st.sampled_from(WORDS) | st.text(max_size=5), max_size=40).map("".join),
)


def fuzz_parser(examples: int) -> tuple[int, list[str]]:
    """Criteria strings from the grammar's vocabulary and from random text: the parser answers
    a rule or its own RuleError, nothing else."""
    crashes: list[str] = []
    tried = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(criteria_text)
    def one(text: str) -> None:
        nonlocal tried
        tried += 1
        try:
            parse_criteria(text)
        except RuleError:
            pass
        except Exception as exc:
            crashes.append(f"{text!r}: {exc!r}"[:300])

    one()
    return tried, crashes


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def bad_bodies(count: int, seed: int) -> list[Any]:
    """Broken ingestion bodies: a valid item with one field replaced, dropped or added."""
    rng = random.Random(seed)
    out: list[Any] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        json_value,
        st.sampled_from(
            ["user_id", "event", "properties", "timestamp", "event_id", "batch", "extra"]
        ),
    )
    def one(value: Any, field: str) -> None:
        # Each body has a user of its own, so an accidentally valid one cannot move an audience.
        item: dict[str, Any] = {"user_id": f"fz{len(out)}", "event": "app_open"}
        if field == "batch":
            out.append({"batch": value})
        elif rng.random() < 0.2:
            item.pop(field, None)
            out.append(item)
        else:
            out.append(item | {field: value})

    one()
    return out


async def bad_input(h: Harness, sizes: Sizes, openapi_fuzz: bool) -> ScenarioResult:
    """9. Fuzzed criteria (parser and API) and broken event bodies interleaved with good events;
    no crash, no 500, every error in the one shape, and only the good events count."""
    project = await h.new_project("bad input")
    tried, crashes = await asyncio.to_thread(fuzz_parser, sizes.fuzz_examples)
    violations = [f"parser crashed: {c}" for c in crashes[:5]]
    answers: dict[str, int] = {}
    rng = random.Random(9)
    samples = [  # a sample through the API as well
        " ".join(rng.choices(WORDS, k=rng.randrange(1, 20))) for _ in range(60)
    ]
    bodies = bad_bodies(min(300, sizes.fuzz_examples), seed=9)
    stream = make_stream(
        project.id, sizes.stream_events // 4, users=sizes.stream_events // 40, seed=9
    )
    async with h.client(project.key) as client:
        for text in samples:
            response = await client.post("/v1/audiences/preview", json={"criteria": text})
            _check_answer(response, {200, 400}, answers, violations)
        sending = asyncio.create_task(send_http(h, project, stream))
        for body in bodies:
            # json.dumps writes NaN and Infinity as bare tokens: invalid JSON, fine fuzz.
            response = await client.post(
                "/v1/events", content=json.dumps(body), headers={"content-type": "application/json"}
            )
            _check_answer(response, {202, 400}, answers, violations)
        raw = await client.post(
            "/v1/events", content=b'{"user_id": "x", ', headers={"content-type": "application/json"}
        )
        _check_answer(raw, {400}, answers, violations)
    stats = await sending
    started = time.monotonic()
    result = await measure(
        h,
        project,
        stats.accepted_events,
        "9 bad input",
        started,
        sizes.converge_timeout_s,
        events_sent=len(stream) + len(bodies),
    )
    if openapi_fuzz:
        violations.extend(run_openapi_fuzz(h, result.notes))
    result.violations.extend(violations)
    result.notes |= {"criteria_fuzzed": tried, "parser_crashes": len(crashes), "answers": answers}
    return result


def _check_answer(
    response: httpx.Response, allowed: set[int], answers: dict[str, int], violations: list[str]
) -> None:
    answers[str(response.status_code)] = answers.get(str(response.status_code), 0) + 1
    if response.status_code not in allowed:
        violations.append(f"{response.request.url.path}: {response.status_code}")
    elif response.status_code >= 400:
        error = response.json().get("error")
        if not isinstance(error, dict) or set(error) < {"code", "message", "details"}:
            violations.append(f"error not in the one shape: {response.text[:200]}")


def run_openapi_fuzz(h: Harness, notes: dict[str, Any]) -> list[str]:
    """The schemathesis run of every endpoint (tests/integration/test_openapi_fuzz.py) against
    the harness's broker and store."""
    test = ROOT / "tests" / "integration" / "test_openapi_fuzz.py"
    if not test.exists():
        notes["openapi_fuzz"] = "tests/integration/test_openapi_fuzz.py not present"
        return []
    env = {
        **os.environ,
        "AUDIENCES_KAFKA_BOOTSTRAP": h.bootstrap,
        "AUDIENCES_MONGO_URL": h.mongo_url,
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = run.stdout.strip().splitlines() or [""]
    notes["openapi_fuzz"] = lines[-1]
    if run.returncode == 0:
        return []
    notes["openapi_fuzz_failures"] = [line for line in lines if line.startswith("FAILED")][:10]
    return [f"schemathesis run failed: {lines[-1]}"]
