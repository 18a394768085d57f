"""The Segment-compatible routes and the gzip middleware over HTTP, with in-memory fakes."""

import base64
import gzip
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from audience_api.errors import Unavailable
from audience_api.gzip_bodies import GzipRequestBodies
from audience_api.http_errors import install_error_handlers
from audience_api.rate_limit import RateLimit, TokenBuckets
from audience_api.routes import segment
from audience_api.segment import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from audience_api.services import IngestionService, KeyService, hash_key
from audience_shared.events import AudienceChanged, EventTracked, UserEventBase

WRITE_KEY = "sk_live_write"
READ_KEY = "sk_read_only"
ORG_KEY = "sk_live_org"
PROJECT = "prj_1"
MAX_BODY = 1_000_000


class FakeKeys:
    def __init__(self) -> None:
        def doc(key_id: str, project_id: str | None, scope: str) -> dict[str, Any]:
            return {"_id": key_id, "organization_id": "o", "project_id": project_id, "scope": scope}

        self.docs = {
            hash_key(WRITE_KEY): doc("k1", PROJECT, "admin"),
            hash_key(READ_KEY): doc("k2", PROJECT, "read"),
            hash_key(ORG_KEY): doc("k3", None, "admin"),
        }

    async def find_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        return self.docs.get(key_hash)

    async def upsert(self, key: dict[str, Any]) -> None:
        raise NotImplementedError

    def forget_cached(self) -> None:
        pass


@dataclass
class FakePublisher:
    published: list[UserEventBase] = field(default_factory=list)
    down: bool = False

    async def publish_user_events(self, events: Sequence[UserEventBase]) -> None:
        if self.down:
            raise Unavailable("The event broker is not reachable; retry shortly")
        self.published.extend(events)

    async def publish_audience_changed(self, event: AudienceChanged) -> None:
        raise NotImplementedError

    async def is_ready(self) -> bool:
        return True


@dataclass
class FakeContainer:
    keys: KeyService
    ingestion: IngestionService
    rate_limits: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(RateLimit(per_second=1000, burst=1000))
    )


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.container = FakeContainer(KeyService(FakeKeys()), IngestionService(publisher))
    install_error_handlers(app, MAX_BODY)
    app.add_middleware(GzipRequestBodies, max_bytes=MAX_BODY)
    app.include_router(segment.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(user: str, event: str = "x", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, **extra}


async def test_batch__basic_write_key__accepted_as_success_true(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    response = await client.post(
        "/v1/batch",
        json={"batch": [track("u1"), {"type": "page", "anonymousId": "a1"}]},
        headers=basic(WRITE_KEY),
    )
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert [(e.project_id, e.user_id) for e in publisher.published] == [
        (PROJECT, "u1"),
        (PROJECT, "anonymous:a1"),
    ]


async def test_analytics_js__text_plain_with_write_key_in_body__accepted_with_cors(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = {**track("u1", "Clicked"), "writeKey": WRITE_KEY, "sentAt": "2026-01-01T00:00:00Z"}
    response = await client.post(
        "/v1/t", content=json.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    [event] = publisher.published
    assert isinstance(event, EventTracked)
    assert event.event == "Clicked"


async def test_single_paths__imply_the_type(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    for path, body in [
        ("/v1/track", {"userId": "u1", "event": "e"}),
        ("/v1/page", {"userId": "u1", "name": "Home"}),
        ("/v1/screen", {"userId": "u1", "name": "Home"}),
        ("/v1/group", {"userId": "u1", "groupId": "g", "traits": {"tier": "gold"}}),
        ("/v1/alias", {"userId": "u1", "previousId": "a1"}),
        ("/v1/i", {"userId": "u1", "traits": {"plan": "pro"}}),
    ]:
        response = await client.post(path, json=body, headers=basic(WRITE_KEY))
        assert response.status_code == 200, (path, response.text)
    assert [type(e).__name__ for e in publisher.published] == [
        "EventTracked",
        "EventTracked",
        "EventTracked",
        "TraitsIdentified",
        "UsersAliased",
        "UsersAliased",
        "TraitsIdentified",
    ]


async def test_no_key__401_in_the_spec_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/batch", json={"batch": [track("u1")]})
    assert response.status_code == 401
    body = response.json()
    assert body["success"] is False
    assert body["code"] == body["error"]["code"] == "unauthorized"
    assert set(body["error"]) == {"code", "message", "details"}


async def test_read_only_key__403(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    response = await client.post(
        "/v1/batch", json={"batch": [track("u1")]}, headers=basic(READ_KEY)
    )
    assert (response.status_code, response.json()["code"]) == (403, "read_only_key")
    assert publisher.published == []


async def test_organization_key__must_name_the_project(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    missing = await client.post("/v1/batch", json={"batch": [track("u1")]}, headers=basic(ORG_KEY))
    named = await client.post(
        "/v1/batch", json={"batch": [track("u1")], "project_id": "prj_9"}, headers=basic(ORG_KEY)
    )
    assert (missing.status_code, missing.json()["code"]) == (400, "project_required")
    assert named.status_code == 200
    assert [e.project_id for e in publisher.published] == ["prj_9"]


async def test_gzip_batch__is_inflated(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    payload = gzip.compress(json.dumps({"batch": [track("u1"), track("u2")]}).encode())
    response = await client.post(
        "/v1/batch",
        content=payload,
        headers={
            **basic(WRITE_KEY),
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text
    assert [e.user_id for e in publisher.published] == ["u1", "u2"]


async def test_gzip_bomb__refused_at_the_bound_without_inflating_it(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    # 50 MB of inflated zeros in about 50 KB; the middleware stops one byte past 1 MB.
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)
    assert len(bomb) < MAX_BODY
    response = await client.post(
        "/v1/batch", content=bomb, headers={**basic(WRITE_KEY), "Content-Encoding": "gzip"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")
    assert publisher.published == []


async def test_gzip__broken_or_truncated_or_other_encoding__refused(
    client: httpx.AsyncClient,
) -> None:
    payload = gzip.compress(json.dumps({"batch": [track("u1")]}).encode())
    cases = [
        (b"not gzip at all", "gzip", 400),
        (payload[:-10], "gzip", 400),
        (payload + b"trailing", "gzip", 400),
        (payload, "br", 415),
    ]
    for content, encoding, status in cases:
        response = await client.post(
            "/v1/batch",
            content=content,
            headers={**basic(WRITE_KEY), "Content-Encoding": encoding},
        )
        assert response.status_code == status, (encoding, response.text)
        assert response.json()["error"]["code"] in ("invalid_encoding", "unsupported_media_type")


async def test_batch_over_500_kb__413(client: httpx.AsyncClient, publisher: FakePublisher) -> None:
    message = track("u1", properties={"pad": "x" * 20_000})
    batch = {"batch": [message] * (MAX_BATCH_BYTES // 20_000 + 1)}
    assert MAX_BATCH_BYTES < len(json.dumps(batch)) < MAX_BODY
    response = await client.post("/v1/batch", json=batch, headers=basic(WRITE_KEY))
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    assert publisher.published == []


async def test_batch__oversize_message__rejected_alone_and_the_rest_accepted(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    big = track("big", properties={"pad": "x" * MAX_MESSAGE_BYTES})
    response = await client.post(
        "/v1/batch", json={"batch": [track("u1"), big, track("u2")]}, headers=basic(WRITE_KEY)
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["success"], body["code"], body["accepted"]) == (False, "invalid_messages", 2)
    assert [(d["index"], d["code"]) for d in body["error"]["details"]] == [(1, "message_too_large")]
    assert [e.user_id for e in publisher.published] == ["u1", "u2"]


async def test_single__oversize_message__400(client: httpx.AsyncClient) -> None:
    big = track("big", properties={"pad": "x" * MAX_MESSAGE_BYTES})
    response = await client.post("/v1/track", json=big, headers=basic(WRITE_KEY))
    assert (response.status_code, response.json()["code"]) == (400, "message_too_large")


async def test_single__invalid__400_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/track", json={"userId": "u1"}, headers=basic(WRITE_KEY))
    assert response.status_code == 400
    [detail] = response.json()["error"]["details"]
    assert (detail["index"], detail["field"]) == (0, "event")


async def test_invalid_json_or_batch__400(client: httpx.AsyncClient) -> None:
    broken = await client.post("/v1/batch", content=b"{nope", headers=basic(WRITE_KEY))
    not_list = await client.post("/v1/batch", json={"batch": {}}, headers=basic(WRITE_KEY))
    bad_sent_at = await client.post(
        "/v1/batch", json={"batch": [], "sentAt": "soon"}, headers=basic(WRITE_KEY)
    )
    assert (broken.status_code, broken.json()["code"]) == (400, "invalid_json")
    assert (not_list.status_code, not_list.json()["code"]) == (400, "invalid_batch")
    assert (bad_sent_at.status_code, bad_sent_at.json()["code"]) == (400, "invalid_request")


async def test_broker_down__503_with_retry_after(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    publisher.down = True
    response = await client.post(
        "/v1/batch", json={"batch": [track("u1")]}, headers=basic(WRITE_KEY)
    )
    assert (response.status_code, response.json()["code"]) == (503, "unavailable")
    assert response.headers["retry-after"] == "5"


async def test_preflight__answers_cors_for_every_spec_path(client: httpx.AsyncClient) -> None:
    for path in ("/v1/batch", "/v1/b", "/v1/identify", "/v1/track", "/v1/t"):
        response = await client.options(
            path,
            headers={
                "Origin": "https://shop.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, anonymousid",
            },
        )
        assert response.status_code == 204, path
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-allow-headers"] == (
            "authorization, content-type, anonymousid"
        )


async def test_chunked_body_without_length__counted_and_refused_past_the_limit(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 64_000
            sent += 64_000

    response = await client.post(
        "/v1/batch", content=chunks(MAX_BODY + 64_000), headers=basic(WRITE_KEY)
    )
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")
    small = json.dumps({"batch": [track("u1")]}).encode()

    async def one() -> AsyncIterator[bytes]:
        yield small

    response = await client.post("/v1/batch", content=one(), headers=basic(WRITE_KEY))
    assert response.status_code == 200, response.text
    assert [e.user_id for e in publisher.published] == ["u1"]
