"""Past its in-flight limit the gateway answers 503 `overloaded` at once; health stays answered."""

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from audience_api.admission import AdmissionLimit


def limited_app(release: asyncio.Event, limit: int) -> AdmissionLimit:
    async def slow(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse("done")

    async def failing(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/slow", slow), Route("/failing", failing), Route("/healthz", healthz)]
    )
    return AdmissionLimit(app, max_in_flight=limit)


async def until_in_flight(admission: AdmissionLimit, count: int) -> None:
    for _ in range(200):
        if admission.in_flight == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{admission.in_flight} in flight, expected {count}")


async def test_admission__limit_reached__refused_at_once_health_answered_then_admitted() -> None:
    release = asyncio.Event()
    admission = limited_app(release, limit=2)
    transport = httpx.ASGITransport(app=admission)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
        await until_in_flight(admission, 2)

        refused = await client.get("/slow")
        health = await client.get("/healthz")

        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.json()["error"]["details"] == {"max_in_flight": 2}
        assert health.status_code == 200
        release.set()
        assert [response.status_code for response in await asyncio.gather(*held)] == [200, 200]
        assert (await client.get("/slow")).status_code == 200
    assert admission.in_flight == 0


async def test_admission__request_fails__its_place_given_back() -> None:
    admission = limited_app(asyncio.Event(), limit=1)
    transport = httpx.ASGITransport(app=admission, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        assert (await client.get("/failing")).status_code == 500
        assert admission.in_flight == 0


async def test_admission__no_limit__nothing_refused() -> None:
    release = asyncio.Event()
    admission = limited_app(release, limit=0)
    transport = httpx.ASGITransport(app=admission)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        held = [asyncio.create_task(client.get("/slow")) for _ in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        assert {response.status_code for response in await asyncio.gather(*held)} == {200}


