"""Past its limit of requests being worked on, the gateway answers 503 `overloaded` at once;
health, the dashboard and preflights stay answered, and waiting on a client takes no place."""

import asyncio
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from audience_api.admission import REQUESTS_SHED, AdmissionLimit
from audience_api.config import Settings
from audience_api.main import create_app


def limited_app(release: asyncio.Event, limit: int) -> AdmissionLimit:
    async def slow(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse("done")

    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    async def failing(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/slow", slow),
            Route("/upload", upload, methods=["POST"]),
            Route("/failing", failing),
            Route("/healthz", ok),
            Route("/dashboard/app.js", ok),
            Route("/v1/batch", ok, methods=["OPTIONS"]),
        ]
    )
    return AdmissionLimit(app, max_in_flight=limit)


def client_of(admission: AdmissionLimit) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=admission, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def until_working(admission: AdmissionLimit, count: int) -> None:
    for _ in range(200):
        if admission.working == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{admission.working} being worked on, expected {count}")


async def test_admission__limit_reached__refused_at_once_exempt_answered_then_admitted() -> None:
    release = asyncio.Event()
    admission = limited_app(release, limit=2)
    async with client_of(admission) as client:
        held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
        await until_working(admission, 2)

        async with asyncio.timeout(2):  # refused at once, not queued
            refused = await client.get("/slow")
        exempt = [
            await client.get("/healthz"),
            await client.get("/dashboard/app.js"),
            await client.options("/v1/batch"),
        ]

        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["access-control-allow-origin"] == "*"
        body = refused.json()
        assert body["error"] == {
            "code": "overloaded",
            "message": body["message"],
            "details": {"retry_after_seconds": 1},
        }
        assert (body["success"], body["code"]) == (False, "overloaded")  # what the SDKs read
        assert [response.status_code for response in exempt] == [200, 200, 200]
        release.set()
        assert [response.status_code for response in await asyncio.gather(*held)] == [200, 200]
        assert (await client.get("/slow")).status_code == 200
    assert admission.working == 0


async def test_admission__body_still_arriving__takes_no_place_until_it_has_come() -> None:
    admission = limited_app(asyncio.Event(), limit=1)
    first_part_read, rest_sent = asyncio.Event(), asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b"first part"
        first_part_read.set()
        await rest_sent.wait()
        yield b", the rest"

    async with client_of(admission) as client:
        upload = asyncio.create_task(client.post("/upload", content=stalled_body()))
        await first_part_read.wait()
        await until_working(admission, 0)  # waiting on its client
        assert (await client.post("/upload", content=b"another")).status_code == 200
        rest_sent.set()
        assert (await upload).text == str(len(b"first part, the rest"))
        stalled = asyncio.create_task(client.post("/upload", content=stalled_body()))
        first_part_read.clear()
        rest_sent.clear()
        await first_part_read.wait()
        stalled.cancel()  # cancelled while it waits on its client
        await asyncio.gather(stalled, return_exceptions=True)
    assert admission.working == 0


async def test_admission__response_watching_for_disconnect_while_sending__counts_once() -> None:
    seen: list[int] = []
    client_gone = asyncio.Event()

    async def download(scope: Scope, receive: Receive, send: Send) -> None:
        # As Starlette's file responses do below ASGI 2.4: a disconnect watch beside the sends.
        async def watch_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.create_task(watch_for_disconnect())
        await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        seen.append(admission.working)  # working again
        await send({"type": "http.response.body", "body": b"file", "more_body": False})

    async def server_receive() -> Message:
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def server_send(message: Message) -> None:
        seen.append(admission.working)  # the watch and this send both wait on the client

    admission = AdmissionLimit(download, max_in_flight=1)
    scope = {"type": "http", "method": "GET", "path": "/v1/exports/x/download", "headers": []}
    await admission(scope, server_receive, server_send)
    assert seen == [0, 1, 0]
    assert admission.working == 0


async def test_admission__behind_a_root_path__exempt_paths_still_answered() -> None:
    admission = limited_app(asyncio.Event(), limit=1)
    admission.working = 1  # the limit reached
    shed_before = REQUESTS_SHED._value.get()
    transport = httpx.ASGITransport(app=admission, root_path="/audiences")
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        assert (await client.get("/audiences/healthz")).status_code == 200
        assert (await client.get("/audiences/slow")).status_code == 503
    assert REQUESTS_SHED._value.get() == shed_before + 1


async def test_admission__no_limit__nothing_refused() -> None:
    release = asyncio.Event()
    admission = limited_app(release, limit=0)
    async with client_of(admission) as client:
        held = [asyncio.create_task(client.get("/slow")) for _ in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        statuses = {response.status_code for response in await asyncio.gather(*held)}
    assert statuses == {200}


def test_create_app__admission_limit_outermost_with_the_setting() -> None:
    app = create_app(Settings(max_requests_in_flight=7))
    outermost = app.user_middleware[0]
    assert outermost.cls is AdmissionLimit  # type: ignore[comparison-overlap]
    assert outermost.kwargs == {"max_in_flight": 7}
