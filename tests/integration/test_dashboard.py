"""The ops dashboard in a real browser (Debian's Chromium through Playwright) against the running
services with data: sign in, audiences, charts, members, explain, pipeline, runs, campaigns.

Every test fails on any browser console error or uncaught page error, and on any request the
page makes outside the gateway (the dashboard must work offline). Screenshots land in
.local/artifacts/dashboard/.
"""

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.integration.conftest import ROOT, ServiceProcess, Stack, free_port
from tests.integration.helpers import wait_for_count, wait_ready

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("AUDIENCES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".local" / "artifacts" / "dashboard"
DATA = ROOT / "tests" / "data" / "csv"
PREMIUM = 25  # more than one page of members (20)
FREE = 5


@dataclass
class World:
    """A project with users, audiences and a CSV import, served by a gateway that knows where
    the evaluator and sync answer (so the pipeline page can show their health)."""

    api_url: str
    key: str
    project_id: str
    premium_id: str
    free_id: str
    static_id: str
    import_id: str
    client: httpx.AsyncClient


@pytest.fixture(scope="module")
def dashboard_api(stack: Stack) -> Iterator[str]:
    env = {
        **stack.env,
        "AUDIENCES_EVALUATOR_URL": f"http://127.0.0.1:{stack.services['evaluator'].port}",
        "AUDIENCES_SYNC_URL": f"http://127.0.0.1:{stack.services['sync'].port}",
    }
    api = ServiceProcess("api-dashboard", free_port(), env)
    api.start()
    yield f"http://127.0.0.1:{api.port}"
    api.stop()


@pytest.fixture(scope="module")
async def world(stack: Stack, dashboard_api: str) -> AsyncIterator[World]:
    async with httpx.AsyncClient(
        base_url=dashboard_api, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    ) as admin:
        project = (await admin.post("/v1/projects", json={"name": "dashboard"})).json()
        # The dashboard polls; the key's limit must not be what a test measures.
        key = (
            await admin.post(
                "/v1/keys",
                json={
                    "project_id": project["id"],
                    "name": "dashboard",
                    "rate_limit": {"per_second": 10_000, "burst": 10_000},
                },
            )
        ).json()
    client = httpx.AsyncClient(
        base_url=dashboard_api, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30
    )
    users = [
        {
            "user_id": f"u{n:02d}",
            "traits": {
                "plan": "premium" if n < PREMIUM else "free",
                "email": f"user{n:02d}@example.com",
                "name": f"User {n:02d}",
            },
        }
        for n in range(PREMIUM + FREE)
    ]
    assert (await client.post("/v1/identify", json={"batch": users})).status_code == 202
    premium = await create(client, "Premium users", "Users with plan=premium")
    free = await create(client, "Free users", "Users with plan=free")
    await wait_for_count(client, premium, PREMIUM, timeout=60)
    await wait_for_count(client, free, FREE, timeout=60)
    # One user downgrades: an exit from one audience and an entry into the other.
    downgrade = {"user_id": "u24", "traits": {"plan": "free"}}
    assert (await client.post("/v1/identify", json=downgrade)).status_code == 202
    await wait_for_count(client, premium, PREMIUM - 1, timeout=60)
    await wait_for_count(client, free, FREE + 1, timeout=60)

    static = await client.post("/v1/audiences", json={"name": "Uploaded VIPs", "kind": "static"})
    assert static.status_code == 201, static.text
    static_id = static.json()["id"]
    with (DATA / "members_with_bad_rows.csv").open("rb") as handle:
        started = await client.post(
            f"/v1/audiences/{static_id}/import",
            files={"file": ("vips.csv", handle, "text/csv")},
        )
    assert started.status_code == 202, started.text
    yield World(
        api_url=dashboard_api,
        key=key["key"],
        project_id=project["id"],
        premium_id=premium,
        free_id=free,
        static_id=static_id,
        import_id=started.json()["import_id"],
        client=client,
    )
    await client.aclose()


async def create(client: httpx.AsyncClient, name: str, criteria: str) -> str:
    response = await client.post("/v1/audiences", json={"name": name, "criteria": criteria})
    assert response.status_code == 201, response.text
    audience_id = str(response.json()["id"])
    await wait_ready(client, audience_id, timeout=60)
    return audience_id


async def eventually(check: Any, timeout: float = 30) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once per module, before any I/O)
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run deploy/local/browser.sh (make test does)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@dataclass
class Watched:
    """Everything the page says went wrong, and every place it tried to reach."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@pytest.fixture
async def page(
    browser: Browser, world: World, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    watched = Watched()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"console: {message.text} at {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
    page.on(
        "request",
        lambda req: (
            None
            if req.url.startswith((world.api_url, "data:", "blob:"))
            else watched.foreign.append(req.url)
        ),
    )
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    await context.close()
    assert not watched.errors, "\n".join(watched.errors)
    assert not watched.foreign, f"requests outside the gateway: {watched.foreign}"


async def sign_in(page: Page, world: World, route: str = "") -> None:
    await page.goto(f"{world.api_url}/dashboard/{route}")
    await page.get_by_label("API key").fill(world.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#nav")).to_be_visible()


# ---- the JSON the dashboard reads ---------------------------------------------------------------


async def test_ops_pipeline__reports_lag_per_partition_offsets_and_service_health(
    world: World, stack: Stack
) -> None:
    before = (await world.client.get("/v1/ops/pipeline")).json()
    events = [{"user_id": f"u{n:02d}", "event": "app_open"} for n in range(10)]
    assert (await world.client.post("/v1/events", json={"batch": events})).status_code == 202

    async def caught_up() -> dict[str, Any] | None:
        body = (await world.client.get("/v1/ops/pipeline")).json()
        totals = body["totals"]
        done = totals["events_produced"] >= before["totals"]["events_produced"] + 10
        return body if done and sum(p["lag"] for p in body["consumer_lag"]) == 0 else None

    after = await eventually(caught_up)

    assert after, "the evaluator's committed offsets never caught up with the produced events"
    assert [p["partition"] for p in after["consumer_lag"]] == [0, 1, 2, 3, 4, 5]
    assert after["totals"]["events_processed"] == after["totals"]["events_produced"]
    assert after["totals"]["dead_letters"] >= 0
    health = {s["name"]: s["status"] for s in after["services"]}
    assert health == {"api": "ready", "evaluator": "ready", "sync": "ready"}
    assert after["consumer_group"] == stack.env["AUDIENCES_CONSUMER_GROUP"]


async def test_ops_pipeline__service_url_not_configured__says_so(stack: Stack) -> None:
    # The session's own gateway was started without the other services' URLs.
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.admin_key}"}
    ) as admin:
        body = (await admin.get("/v1/ops/pipeline")).json()
        unauthenticated = await admin.get("/v1/ops/pipeline", headers={"Authorization": ""})
    assert {s["name"]: s["status"] for s in body["services"]} == {
        "api": "ready",
        "evaluator": "not_configured",
        "sync": "not_configured",
    }
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "unauthorized"


async def test_ops_runs__import__listed_with_row_counts_and_errors(world: World) -> None:
    async def finished() -> dict[str, Any] | None:
        items = (await world.client.get("/v1/ops/runs", params={"kind": "import"})).json()["items"]
        run = next(r for r in items if r["id"] == world.import_id)
        return run if run["status"] in ("completed", "failed") else None

    run = await eventually(finished, timeout=90)

    assert run, "the import did not finish"
    assert run["status"] == "completed"
    assert run["rows"] == {"total": 6, "imported": 3, "failed": 3}
    assert run["progress"] == 1.0
    assert [e["row"] for e in run["errors"]] == [3, 4, 5]
    other = await world.client.get("/v1/ops/runs", params={"project_id": "prj_elsewhere"})
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"


# ---- the browser ------------------------------------------------------------------------------


async def test_dashboard__offline_assets__all_served_by_the_gateway(world: World) -> None:
    index = await world.client.get("/dashboard/")
    assert index.status_code == 200
    assert "text/html" in index.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"#:]+)"', index.text)
    assert "vendor/uplot/uPlot.iife.min.js" in assets
    for asset in assets:
        response = await world.client.get(f"/dashboard/{asset}")
        assert response.status_code == 200, asset
    assert (await world.client.get("/dashboard", follow_redirects=True)).status_code == 200


async def test_sign_in__audiences_table__sizes_changes_and_filters(
    page: Page, world: World
) -> None:
    await sign_in(page, world)

    table = page.locator("#audiences-table")
    premium = table.locator(f'tr[data-audience-id="{world.premium_id}"]')
    await expect(premium).to_be_visible()
    cells = premium.locator("td")
    await expect(cells.nth(0)).to_have_text("dynamic")
    await expect(cells.nth(2)).to_have_text("ready")
    await expect(cells.nth(3)).to_have_text(str(PREMIUM - 1))
    # The net of the history points of the last day (the evaluator writes them on builds and
    # on its reconcile passes, so the exit may not be in them yet).
    history = (await world.client.get(f"/v1/audiences/{world.premium_id}/history")).json()
    change = sum(p["entered"] - p["exited"] for p in history)
    assert change in (PREMIUM, PREMIUM - 1)
    await expect(premium.locator('[data-col="change"]')).to_have_text(f"+{change}")
    await expect(premium.locator('[data-col="refreshed"] time')).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('audiences.apiKey')") == world.key

    await page.get_by_label("Search").fill("free")
    await expect(table.locator("tbody tr:visible")).to_have_count(1)
    await expect(table.locator(f'tr[data-audience-id="{world.free_id}"]')).to_be_visible()
    await page.get_by_label("Search").fill("")
    await page.get_by_label("Kind").select_option("static")
    await expect(table.locator("tbody tr:visible")).to_have_count(1)
    await expect(table.locator(f'tr[data-audience-id="{world.static_id}"]')).to_be_visible()


async def test_audience_page__refresh_then_charts_drawn_from_history(
    page: Page, world: World
) -> None:
    await sign_in(page, world)
    await page.get_by_role("link", name="Premium users").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Premium users")
    await expect(page.locator("#rule-text")).to_have_text("Users where plan = premium")
    await expect(page.locator(".tree .tree-leaf")).to_have_text("trait plan = premium")

    # The rebuild writes this hour's history point, which then holds the downgrade's exit.
    await page.get_by_role("button", name="Refresh").click()
    job = page.locator("#jobs .job").first
    await expect(job.locator(".badge")).to_have_text("ready", timeout=60_000)
    await expect(job.locator(".progress-text")).to_have_text("100%")
    await page.reload()

    history = (await world.client.get(f"/v1/audiences/{world.premium_id}/history")).json()
    # One point per hour: two when the test ran across an hour boundary.
    assert 1 <= len(history) <= 2, history
    size = page.locator("#size-chart")
    await expect(size).to_have_attribute("data-points", str(len(history)))
    plotted = await page.evaluate("document.getElementById('size-chart')._chart.data")
    assert plotted[1] == [point["count"] for point in history]
    assert plotted[1][-1] == PREMIUM - 1
    assert plotted[0] == sorted(plotted[0])
    flow = await page.evaluate("document.getElementById('flow-chart')._chart.data")
    assert flow[1] == [p["entered"] for p in history]
    assert flow[2] == [-p["exited"] for p in history]
    assert sum(flow[1]) == PREMIUM
    assert -sum(flow[2]) == 1
    # The canvas really has ink on it, not only data behind it.
    inked = await page.evaluate(
        """() => {
          const canvas = document.querySelector('#size-chart canvas');
          const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
          let inked = 0;
          for (let i = 3; i < pixels.data.length; i += 4) if (pixels.data[i] > 0) inked++;
          return inked;
        }"""
    )
    assert inked > 100
    await expect(page.locator("#size-figure .chart-data tbody tr")).to_have_count(len(history))


async def test_members__search_and_paging(page: Page, world: World) -> None:
    await sign_in(page, world, f"#/audiences/{world.premium_id}")
    rows = page.locator("#members-body tr")
    await expect(rows).to_have_count(20)
    await expect(page.locator("#members-next")).to_be_enabled()

    await page.locator("#members-next").click()
    await expect(rows).to_have_count(PREMIUM - 1 - 20)
    await expect(page.locator("#members-next")).to_be_disabled()
    await expect(page.locator("#members-position")).to_have_text(re.compile(r"^Page 2"))
    await page.locator("#members-prev").click()
    await expect(rows).to_have_count(20)

    await page.get_by_label("Search members").fill("user07@example.com")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("th")).to_have_text("u07")
    await expect(rows.first).to_contain_text("User 07")


async def test_explain__member_and_non_member__each_condition_outcome(
    page: Page, world: World
) -> None:
    await sign_in(page, world, f"#/audiences/{world.premium_id}")
    await page.get_by_role("button", name="Explain u03").click()
    result = page.locator("#explain-result")
    await expect(result.locator(".explain-verdict")).to_have_text(
        "u03 matches the rule; is a member now."
    )
    leaf = result.locator(".tree-leaf")
    await expect(leaf).to_have_attribute("data-outcome", "true")
    await expect(leaf).to_contain_text("observed: premium")

    await page.get_by_label("User id").fill("u24")
    await page.get_by_label("User id").press("Enter")
    await expect(result.locator(".explain-verdict")).to_have_text(
        "u24 does not match the rule; is not a member now."
    )
    await expect(leaf).to_have_attribute("data-outcome", "false")
    await expect(leaf).to_contain_text("observed: free")


async def test_export_button__live_progress_then_runs_page(page: Page, world: World) -> None:
    await sign_in(page, world, f"#/audiences/{world.free_id}")
    await page.get_by_role("button", name="Export CSV").click()
    job = page.locator("#jobs .job").first
    await expect(job.locator(".badge")).to_have_text("completed", timeout=60_000)
    await expect(job).to_contain_text(f"{FREE + 1} of {FREE + 1} rows")
    await expect(job.get_by_role("button", name="Download")).to_be_visible()

    await page.get_by_role("link", name="Syncs & imports").click()
    runs = page.locator("#runs-body tr")
    export_row = runs.filter(has_text="Free users").filter(has_text="export")
    await expect(export_row).to_have_count(1)
    await expect(export_row).to_contain_text(f"{FREE + 1} of {FREE + 1} written")
    import_row = page.locator(f'#runs-body tr[data-run-id="{world.import_id}"]')
    await expect(import_row).to_contain_text("3 imported, 3 failed of 6", timeout=90_000)
    await import_row.get_by_text("3 errors").click()
    await expect(import_row.locator(".errors li")).to_have_count(3)


async def test_pipeline_page__partitions_health_and_rates(page: Page, world: World) -> None:
    await sign_in(page, world, "#/pipeline")
    await expect(page.locator("#lag-body tr")).to_have_count(6)
    for service in ("api", "evaluator", "sync"):
        card = page.locator(f'.service[data-service="{service}"]')
        await expect(card.locator(".badge")).to_have_text("ready")
    await expect(page.locator("#stat-dead .stat-value")).to_have_text(re.compile(r"^\d[\d,]*$"))
    # Rates need two readings; the second arrives one poll later.
    await expect(page.locator("#stat-events .stat-value")).to_have_text(
        re.compile(r"^\d"), timeout=15_000
    )
    await expect(page.locator("#rate-chart")).to_have_attribute(
        "data-points", re.compile(r"^[1-9]")
    )


async def campaigns_available(world: World) -> bool:
    paths = (await world.client.get("/openapi.json")).json()["paths"]
    return "/v1/projects/{project_id}/campaigns/{campaign_id}/audiences/reorder" in paths


async def test_campaigns__reorder_with_buttons_and_drag(page: Page, world: World) -> None:
    if not await campaigns_available(world):
        pytest.skip("the campaigns endpoints are not served by this gateway yet")
    base = f"/v1/projects/{world.project_id}/campaigns"
    created = await world.client.post(base, json={"name": "Paywalls"})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    ids = {}
    for name in ("Lapsed", "Trial", "Loyal"):
        response = await world.client.post(
            f"{base}/{campaign_id}/audiences", json={"name": name, "filters": []}
        )
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]

    async def order() -> list[str]:
        items = (await world.client.get(f"{base}/{campaign_id}/audiences")).json()
        return [a["name"] for a in items]

    await sign_in(page, world, f"#/campaigns/{campaign_id}")
    items = page.locator("#priority-list .priority-item")
    await expect(items).to_have_count(3)

    await page.get_by_role("button", name="Move Loyal up").click()
    await expect(items.nth(1)).to_contain_text("Loyal")
    assert await order() == ["Lapsed", "Loyal", "Trial"]
    # Focus stays on the moved row, so the keyboard can keep moving it.
    await page.keyboard.press("Enter")
    await expect(items.nth(0)).to_contain_text("Loyal")
    assert await order() == ["Loyal", "Lapsed", "Trial"]

    await items.nth(0).drag_to(items.nth(2))
    await expect(items.nth(2)).to_contain_text("Loyal")
    assert await order() == ["Lapsed", "Trial", "Loyal"]
    await expect(items.nth(0).locator(".priority-rank")).to_have_text("1")


async def test_campaigns__experiment_results_chart(page: Page, world: World) -> None:
    if not await campaigns_available(world):
        pytest.skip("the campaigns endpoints are not served by this gateway yet")
    base = f"/v1/projects/{world.project_id}/campaigns"
    campaign_id = (await world.client.post(base, json={"name": "Experiment"})).json()["id"]
    variants = [
        {"paywall_id": "pw_a", "traffic_percentage": 45},
        {"paywall_id": "pw_b", "traffic_percentage": 45},
    ]
    created = await world.client.post(
        f"{base}/{campaign_id}/audiences",
        json={"name": "Everyone", "filters": [], "experiment": {"variants": variants}},
    )
    assert created.status_code == 201, created.text
    for n in range(PREMIUM + FREE):
        resolved = await world.client.post(
            f"{base}/{campaign_id}/resolve", json={"user_id": f"u{n:02d}"}
        )
        assert resolved.status_code == 200, resolved.text
    experiment_id = created.json()["experiment"]["id"]
    # Ten exposed users buy afterwards: conversions once the evaluator has their events.
    purchases = [{"user_id": f"u{n:02d}", "event": "purchase"} for n in range(10)]
    assert (await world.client.post("/v1/events", json={"batch": purchases})).status_code == 202
    path = f"/v1/projects/{world.project_id}/experiments/{experiment_id}/results"

    async def converted() -> dict[str, Any] | None:
        body: dict[str, Any] = (await world.client.get(path)).json()
        groups = [*body["variants"], body["holdout"]]
        return body if sum(g["conversions"] for g in groups) == 10 else None

    results = await eventually(converted)
    assert results, "the purchases never counted as conversions"

    await sign_in(page, world, f"#/campaigns/{campaign_id}")

    article = page.locator(f'.experiment[data-experiment-id="{experiment_id}"]')
    await expect(article.locator(".results-table tbody tr")).to_have_count(3)
    chart = article.locator(".chart")
    await expect(chart).to_have_attribute("data-points", "3")
    plotted = await chart.evaluate("node => node._chart.data[1]")
    groups = [*results["variants"], results["holdout"]]
    assert plotted == [g["rate"] or 0 for g in groups]
    assert any(rate > 0 for rate in plotted)
    exposures = [v["exposures"] for v in results["variants"]] + [results["holdout"]["exposures"]]
    assert sum(exposures) == PREMIUM + FREE
    shown = await article.locator(".results-table tbody td:nth-child(3)").all_text_contents()
    assert [int(text.replace(",", "")) for text in shown] == exposures


async def test_phone_width__pages_fit_and_keyboard_reaches_the_members(
    page: Page, world: World
) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, world, f"#/audiences/{world.premium_id}")
    await expect(page.locator("#members-body tr")).to_have_count(20)
    await expect(page.locator("#size-chart")).to_have_attribute("data-points", re.compile(r"^\d"))
    for route in ("#/audiences", "#/pipeline", "#/runs", f"#/audiences/{world.premium_id}"):
        await page.goto(f"{world.api_url}/dashboard/{route}")
        await expect(page.get_by_role("heading", level=1)).to_be_focused()
        # Wide tables scroll inside their own box; the page itself never scrolls sideways.
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (route, overflow)
    await expect(page.locator("#members-body tr")).to_have_count(20)
    await page.get_by_label("Search members").focus()
    await page.keyboard.type("user11@")
    await expect(page.locator("#members-body tr")).to_have_count(1)
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Explain u11")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#explain-result .explain-verdict")).to_contain_text("u11 matches")
