"""The Klaviyo client against the fake Klaviyo over real HTTP: paging, pacing, 429s, 5xx."""

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from audience_sync.adapters.klaviyo import KlaviyoClient
from audience_sync.errors import SourceRejected, SourceUnavailable
from tests.fakes.klaviyo import FakeKlaviyo, page_cursor, running

KEY = "pk_test_fake_key_1234"


@pytest.fixture
def klaviyo() -> Iterator[FakeKlaviyo]:
    with running() as fake:
        yield fake


def client(fake: FakeKlaviyo, rate: float = 50, **kwargs: float) -> KlaviyoClient:
    return KlaviyoClient(
        fake.base_url,
        "2024-10-15",
        rate,
        backoff_max_s=0.2,
        **kwargs,  # type: ignore[arg-type]
    )


async def pull(source: KlaviyoClient, list_id: str, since: datetime | None = None) -> list[str]:
    url: str | None = source.first_profiles_url(list_id, since)
    seen: list[str] = []
    while url:
        page = await source.profiles_page(KEY, url)
        seen.extend(p.email or "" for p in page.profiles)
        url = page.next_url
    return seen


async def test_lists__paged_by_ten__are_all_returned(klaviyo: FakeKlaviyo) -> None:
    for i in range(23):
        klaviyo.add_list(f"List {i}")
    source = client(klaviyo)
    found = await source.lists(KEY)
    await source.aclose()
    assert len(found) == 23
    assert len(klaviyo.requests("/api/lists")) == 3


async def test_profiles__follow_links_next_with_page_size_100(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Big")
    klaviyo.add_profiles(list_id, [{"email": f"p{i}@x.io"} for i in range(250)])
    source = client(klaviyo)
    emails = await pull(source, list_id)
    await source.aclose()
    assert len(emails) == 250 == len(set(emails))
    assert [r.query["page[size]"] for r in klaviyo.requests("/profiles")] == ["100"] * 3


async def test_profiles__incremental__filters_on_joined_group_at(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Growing")
    old = datetime.now(UTC) - timedelta(days=2)
    klaviyo.add_profiles(list_id, [{"email": "old@x.io"}], joined_at=old)
    klaviyo.add_profiles(list_id, [{"email": "new@x.io"}])
    source = client(klaviyo)
    emails = await pull(source, list_id, since=old + timedelta(seconds=1))
    await source.aclose()
    assert emails == ["new@x.io"]


async def test_429__waits_retry_after_then_succeeds(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Throttled")
    klaviyo.add_profiles(list_id, [{"email": f"t{i}@x.io"} for i in range(500)])
    klaviyo.budget, klaviyo.window_s = 2, 1.0
    source = client(klaviyo, rate=100)
    emails = await pull(source, list_id)
    await source.aclose()
    assert len(emails) == 500
    log = klaviyo.requests("/profiles")
    throttled = [i for i, r in enumerate(log) if r.status == 429]
    assert throttled
    for i in throttled:
        if i + 1 < len(log):
            assert log[i + 1].at - log[i].at >= 0.95 * (log[i].retry_after or 0)


async def test_429_storm__every_retry_waits_its_retry_after(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Storm")
    klaviyo.add_profiles(list_id, [{"email": f"s{i}@x.io"} for i in range(150)])
    klaviyo.fail(times=3, status=429, path_contains="/profiles", retry_after=0.5)
    source = client(klaviyo, rate=100)
    emails = await pull(source, list_id)
    await source.aclose()
    assert len(emails) == 150
    log = klaviyo.requests("/profiles")
    assert [r.status for r in log] == [429, 429, 429, 200, 200]
    for before, after in itertools.pairwise(log[:4]):
        assert after.at - before.at >= 0.95 * 0.5


async def test_unknown_list__is_rejected__and_the_fake_keeps_answering(
    klaviyo: FakeKlaviyo,
) -> None:
    # A short timeout: a fake that stopped answering fails this test instead of hanging it.
    source = client(klaviyo, timeout_s=5, max_attempts=1)
    with pytest.raises(SourceRejected) as refused:
        await pull(source, "L_missing")
    list_id = klaviyo.add_list("After a 404")
    klaviyo.add_profiles(list_id, [{"email": "a@x.io"}])
    emails = await pull(source, list_id)
    await source.aclose()
    assert refused.value.code == "klaviyo_not_found"
    assert emails == ["a@x.io"]


async def test_pacing__spaces_requests_at_the_configured_rate(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Paced")
    klaviyo.add_profiles(list_id, [{"email": f"p{i}@x.io"} for i in range(600)])
    source = client(klaviyo, rate=10)
    started = time.monotonic()
    await pull(source, list_id)
    await source.aclose()
    # Six requests at 10/s take at least half a second: no burst.
    assert time.monotonic() - started >= 0.45


async def test_5xx__retried_with_backoff_then_succeeds(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Flaky")
    klaviyo.add_profiles(list_id, [{"email": f"f{i}@x.io"} for i in range(150)])
    klaviyo.fail(times=3, status=502, path_contains=f"page[cursor]={page_cursor(100)}")
    source = client(klaviyo, max_attempts=6)
    emails = await pull(source, list_id)
    await source.aclose()
    assert len(emails) == 150


async def test_5xx__beyond_the_attempts__is_transient(klaviyo: FakeKlaviyo) -> None:
    list_id = klaviyo.add_list("Down")
    klaviyo.add_profiles(list_id, [{"email": "d@x.io"}])
    klaviyo.fail(times=10, status=503, path_contains="/profiles")
    source = client(klaviyo, max_attempts=3)
    with pytest.raises(SourceUnavailable):
        await pull(source, list_id)
    await source.aclose()
    assert len(klaviyo.requests("/profiles")) == 3


async def test_bad_key__is_rejected_for_good(klaviyo: FakeKlaviyo) -> None:
    source = client(klaviyo)
    with pytest.raises(SourceRejected) as refused:
        await source.lists("pk_wrong")
    await source.aclose()
    assert refused.value.code == "klaviyo_not_authenticated"


async def test_fake__requires_the_revision_header(klaviyo: FakeKlaviyo) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{klaviyo.base_url}/api/lists/", headers={"Authorization": f"Klaviyo-API-Key {KEY}"}
        )
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["parameter"] == "revision"


async def test_next_link_to_another_host__is_refused(klaviyo: FakeKlaviyo) -> None:
    source = client(klaviyo)
    with pytest.raises(SourceRejected):
        await source.profiles_page(KEY, "https://evil.example/api/lists/x/profiles")
    await source.aclose()
