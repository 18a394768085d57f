"""Scenario 10: every endpoint without a key, with a revoked key, a read-only key on writes and
another project's key on this project's ids; tampered cursors; oversized bodies; hashed keys."""

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.reliability.harness import (
    UNLIMITED,
    Harness,
    Project,
    ScenarioResult,
    Sizes,
    checked,
    measure,
    send_http,
)
from bench.reliability.oracle import make_stream

WRITE_METHODS = {"post", "put", "patch", "delete"}
# POSTs that only read: a read-only key may call them.
READ_POSTS = re.compile(r"/(preview|preview-change|resolve)$")
INGEST_PATHS = ["/v1/events", "/v1/identify", "/v1/track", "/v1/batch"]


def is_error_shape(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error")
    except ValueError:
        return False
    return isinstance(error, dict) and {"code", "message", "details"} <= set(error)


async def operations(h: Harness) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=h.api_url) as client:
        spec = (await client.get("/openapi.json")).json()
    return [
        (method, path)
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/")
        for method in ops
        if method in WRITE_METHODS | {"get"}
    ]


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "does_not_exist"), path)


async def create_key(h: Harness, key: str, project_id: str, scope: str) -> dict[str, Any]:
    async with h.client(key) as client:
        body = {"project_id": project_id, "scope": scope, "rate_limit": UNLIMITED}
        return dict(await checked(client.post("/v1/keys", json=body), 201))


async def security(h: Harness, sizes: Sizes) -> ScenarioResult:
    """10. The oracle's project must end with exactly the events its own write key sent."""
    own = await h.new_project("security a")
    other = await h.new_project("security b")
    read = await create_key(h, own.key, own.id, "read")
    revoked = await create_key(h, own.key, own.id, "admin")
    async with h.client(own.key) as client:
        response = await client.delete(f"/v1/keys/{revoked['id']}")
        if response.status_code != 204:
            raise RuntimeError(f"could not revoke a key: {response.status_code} {response.text}")
    ids = {"audience_id": own.audiences["opens"], "project_id": own.id, "key_id": read["id"]}
    ids |= {"user_id": "u1", "group_id": own.audiences["opens"]}
    violations: list[str] = []
    checks = 0
    answers: dict[str, int] = {}

    async def expect(
        who: str, method: str, path: str, key: str | None, ok: set[int] | None, bad: set[int]
    ) -> None:
        """`ok`: the statuses allowed (None: any 4xx); `bad`: statuses that are a breach."""
        nonlocal checks
        checks += 1
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=h.api_url, timeout=30) as client:
            body: dict[str, Any] | None = {} if method in WRITE_METHODS - {"delete"} else None
            response = await client.request(method.upper(), path, json=body, headers=headers)
        status = response.status_code
        answers[f"{who} {status}"] = answers.get(f"{who} {status}", 0) + 1
        allowed = ok is None and 400 <= status < 500 and status not in bad
        if not (allowed or (ok is not None and status in ok)):
            violations.append(f"{who}: {method.upper()} {path} -> {status}")
        elif status >= 400 and not is_error_shape(response):
            violations.append(f"{who}: {method.upper()} {path} error not in the one shape")

    ops = await operations(h)
    for method, path in ops:
        url = fill(path, ids)
        await expect("no key", method, url, None, {401}, set())
        await expect("revoked key", method, url, revoked["key"], {401}, set())
        if method in WRITE_METHODS and not READ_POSTS.search(path):
            await expect("read key on write", method, url, read["key"], None, {401})
        if "{" in path:
            await expect("other project's key", method, url, other.key, None, {401})
    # The ingestion paths name the project in the body too: another project's key is refused.
    victim = {"user_id": "victim", "event": "app_open", "project_id": own.id}
    attacks = 0
    for key, who in (
        (read["key"], "read key"),
        (other.key, "other project"),
        (revoked["key"], "revoked"),
    ):
        for n in range(6):
            attacks += 1
            body = victim | {"event_id": f"{own.id}-attack-{who}-{n}"}
            async with h.client(key) as client:
                response = await client.post("/v1/events", json=body)
            if response.status_code == 202:
                violations.append(f"{who}: an event for another project was accepted")
    violations.extend(await tampered_cursors(h, own, other))
    violations.extend(await oversized_bodies(h, own))
    violations.extend(await keys_hashed(h, [h.admin_key, own.key, other.key, read["key"]]))
    stream = make_stream(own.id, 400, users=40, seed=10)
    stats = await send_http(h, own, stream)
    result = await measure(
        h,
        own,
        stats.accepted_events,
        "10 security",
        time.monotonic(),
        sizes.converge_timeout_s,
        events_sent=len(stream) + attacks,
    )
    result.violations.extend(violations)
    result.notes |= {"endpoints": len(ops), "checks": checks, "answers": answers}
    return result


async def tampered_cursors(h: Harness, own: Project, other: Project) -> list[str]:
    out: list[str] = []
    async with h.client(own.key) as client:
        page = await checked(client.get("/v1/audiences", params={"first": 1}), 200)
        cursor = page["page_info"]["end_cursor"]
        if not cursor:
            return ["no cursor to tamper with: fewer than two audiences"]
        flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
        forged = base64.urlsafe_b64encode(b'{"after": "aud_zzz"}').decode()
        for bad in (flipped, forged, "not-a-cursor", cursor + "x"):
            response = await client.get("/v1/audiences", params={"first": 1, "after": bad})
            if response.status_code != 400 or not is_error_shape(response):
                out.append(f"tampered cursor {bad[:20]!r} -> {response.status_code}")
    async with h.client(other.key) as client:
        response = await client.get("/v1/audiences", params={"first": 1, "after": cursor})
        if response.status_code == 200 and any(
            item["id"] in own.audiences.values() for item in response.json()["items"]
        ):
            out.append("another project's cursor showed this project's audiences")
    return out


async def oversized_bodies(h: Harness, own: Project) -> list[str]:
    out: list[str] = []
    big = b'{"user_id": "u", "event": "x", "properties": {"b": "' + b"x" * 2_000_000 + b'"}}'

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]
            await asyncio.sleep(0)

    async with h.client(own.key) as client:
        for label, content in (("with content-length", big), ("chunked", chunked())):
            try:
                response = await client.post(
                    "/v1/events", content=content, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as exc:
                # Closing the connection on an oversized upload is also a refusal.
                out_status = f"closed ({exc!r})"
                if label == "chunked":
                    continue
                out.append(f"oversized body {label}: {out_status}")
                continue
            if response.status_code != 413 or not is_error_shape(response):
                out.append(f"oversized body {label} -> {response.status_code}")
    return out


async def keys_hashed(h: Harness, keys: list[str]) -> list[str]:
    """No stored document holds a key in plain text, in any field."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(h.mongo_url)
    try:
        docs = [doc async for doc in client[h.database].api_keys.find({})]
    finally:
        await client.close()
    if not docs:
        return ["no api_keys documents found"]
    text = repr(docs)
    leaked = [key[:8] + "…" for key in keys if key in text]
    return [f"keys stored in plain text: {leaked}"] if leaked else []
