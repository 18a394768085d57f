"""Campaign audiences as use cases over an in-memory store: order, caps, experiments, results."""

import random
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audience_api import experiments
from audience_api.campaigns import CampaignService
from audience_api.errors import ApiError, InvalidRequest
from audience_api.frequency_caps import FrequencyCap, parse_frequency_cap
from audience_api.services import Principal
from audience_shared.rules import RuleError

Document = dict[str, Any]
PROJECT = "prj_unit"
CALLER = Principal("key_1", "org_1", PROJECT, "admin")


class FakeCampaignStore:
    """Dicts keyed like the Mongo adapter's `_id`s."""

    def __init__(self) -> None:
        self.campaigns_by_id: dict[str, Document] = {}
        self.refs: dict[str, Document] = {}
        self.profiles: dict[str, Document] = {}
        self.counters: dict[str, int] = {}
        self.resolutions: dict[str, Document] = {}
        self.exposure_docs: dict[str, Document] = {}
        self.profile_fields: tuple[str, ...] = ()

    async def insert_campaign(self, campaign: Document) -> None:
        self.campaigns_by_id[campaign["_id"]] = campaign

    async def campaign(self, project_id: str, campaign_id: str) -> Document | None:
        doc = self.campaigns_by_id.get(campaign_id)
        return doc if doc is not None and doc["project_id"] == project_id else None

    async def campaigns(self, project_id: str) -> list[Document]:
        return [d for d in self.campaigns_by_id.values() if d["project_id"] == project_id]

    async def replace_campaign(self, campaign: Document, expected_version: int) -> bool:
        current = self.campaigns_by_id.get(campaign["_id"])
        if current is None or current["version"] != expected_version:
            return False
        self.campaigns_by_id[campaign["_id"]] = campaign
        return True

    async def delete_campaign(self, project_id: str, campaign_id: str) -> bool:
        return self.campaigns_by_id.pop(campaign_id, None) is not None

    async def save_experiment_refs(self, refs: Sequence[Document]) -> None:
        self.refs.update({ref["_id"]: ref for ref in refs})

    async def delete_experiment_refs(self, ref_ids: Sequence[str]) -> None:
        for ref_id in ref_ids:
            self.refs.pop(ref_id, None)

    async def experiment_ref(self, project_id: str, experiment_id: str) -> Document | None:
        return self.refs.get(f"{project_id}|{experiment_id}")

    async def profile(
        self, project_id: str, user_id: str, fields: Sequence[str]
    ) -> Document | None:
        self.profile_fields = tuple(fields)
        return self.profiles.get(f"{project_id}/{user_id}")

    async def impression_counts(self, counter_ids: Sequence[str]) -> dict[str, int]:
        return {i: self.counters[i] for i in counter_ids if i in self.counters}

    async def count_impression(self, counter_id: str, fields: Document, at: datetime) -> None:
        self.counters[counter_id] = self.counters.get(counter_id, 0) + 1

    async def stored_resolution(self, resolution_id: str) -> Document | None:
        return self.resolutions.get(resolution_id)

    async def save_resolution(self, resolution: Document) -> bool:
        if resolution["_id"] in self.resolutions:
            return False
        self.resolutions[resolution["_id"]] = resolution
        return True

    async def record_exposure(self, exposure: Document) -> None:
        self.exposure_docs.setdefault(exposure["_id"], exposure)

    async def exposures(self, project_id: str, experiment_id: str) -> list[Document]:
        return [
            e
            for e in self.exposure_docs.values()
            if e["project_id"] == project_id and e["experiment_id"] == experiment_id
        ]

    async def last_event_times(
        self, project_id: str, user_ids: Sequence[str], event: str
    ) -> dict[str, datetime]:
        found = {}
        for user_id in user_ids:
            profile = self.profiles.get(f"{project_id}/{user_id}", {})
            at = profile.get("events", {}).get(event, {}).get("last_at")
            if at is not None:
                found[user_id] = at
        return found


class FakeProjects:
    async def project(self, project_id: str) -> Document | None:
        return {"_id": project_id, "organization_id": "org_1"}


class MovableClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(datetime(2030, 1, 16, 12, 0, tzinfo=UTC))  # a Wednesday


@pytest.fixture
def store() -> FakeCampaignStore:
    return FakeCampaignStore()


@pytest.fixture
def service(store: FakeCampaignStore, clock: MovableClock) -> CampaignService:
    return CampaignService(store, FakeProjects(), clock, "purchase", auto_promote_check_s=1e9)


async def new_campaign(service: CampaignService) -> str:
    created = await service.create_campaign(CALLER, PROJECT, {"name": "c"})
    return str(created["id"])


async def add(service: CampaignService, campaign_id: str, name: str, **fields: Any) -> Document:
    payload = {"name": name, "filters": [], **fields}
    return await service.create_audience(CALLER, PROJECT, campaign_id, payload)


async def resolve(
    service: CampaignService, campaign_id: str, user_id: str, **request: Any
) -> Document:
    return await service.resolve(CALLER, PROJECT, campaign_id, {"user_id": user_id, **request})


def profile(store: FakeCampaignStore, user_id: str, **traits: Any) -> None:
    store.profiles[f"{PROJECT}/{user_id}"] = {"traits": traits, "events": {}, "event_count": 0}


async def test_create__next_free_priority_order(service: CampaignService) -> None:
    cid = await new_campaign(service)
    orders = [(await add(service, cid, f"a{n}"))["priority_order"] for n in range(3)]
    assert orders == [0, 1, 2]


async def test_resolve__first_match_in_priority_order__and_after_reorder(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    us = await add(
        service,
        cid,
        "US",
        filters=[{"field": "country", "operator": "is", "value": "US"}],
        paywall_id="pw_us",
    )
    everyone = await add(service, cid, "everyone", paywall_id="pw_all")
    profile(store, "u1", country="US")
    assert (await resolve(service, cid, "u1"))["audience_id"] == us["id"]
    reordered = await service.reorder_audiences(CALLER, PROJECT, cid, [everyone["id"], us["id"]])
    assert [(a["id"], a["priority_order"]) for a in reordered] == [
        (everyone["id"], 0),
        (us["id"], 1),
    ]
    answer = await resolve(service, cid, "u1")
    assert (answer["audience_id"], answer["paywall_id"]) == (everyone["id"], "pw_all")


async def test_reorder__not_exactly_the_audiences__invalid_order(service: CampaignService) -> None:
    cid = await new_campaign(service)
    a = (await add(service, cid, "a"))["id"]
    b = (await add(service, cid, "b"))["id"]
    for order in ([a], [a, b, "aud_nope"], [a, a, b], [a, a]):
        with pytest.raises(InvalidRequest) as raised:
            await service.reorder_audiences(CALLER, PROJECT, cid, order)
        assert raised.value.code == "invalid_order"
    listed = await service.list_audiences(CALLER, PROJECT, cid)
    assert [x["id"] for x in listed] == [a, b]


async def test_resolve__attributes_override_traits(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    await add(
        service,
        cid,
        "DE",
        filters=[{"field": "country", "operator": "is", "value": "DE"}],
        paywall_id="pw",
    )
    profile(store, "u1", country="US")
    assert (await resolve(service, cid, "u1"))["audience_id"] is None
    hit = await resolve(service, cid, "u1", attributes={"country": "DE"})
    assert hit["paywall_id"] == "pw"


async def test_resolve__event_aggregates(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    await add(
        service,
        cid,
        "busy",
        filters=[
            {"field": "event_count", "operator": "gte", "value": "50"},
            {"field": "events.app_open.count", "operator": "gt", "value": 3, "conjunction": "and"},
        ],
        paywall_id="pw",
    )
    store.profiles[f"{PROJECT}/u1"] = {
        "traits": {},
        "event_count": 50,
        "events": {"app_open": {"count": 4}},
    }
    store.profiles[f"{PROJECT}/u2"] = {
        "traits": {},
        "event_count": 50,
        "events": {"app_open": {"count": 3}},
    }
    assert (await resolve(service, cid, "u1"))["paywall_id"] == "pw"
    assert (await resolve(service, cid, "u2"))["paywall_id"] is None
    # Only the slots the filters name are read, never every event's timestamp list.
    assert "events" not in store.profile_fields
    assert "events.app_open.count" in store.profile_fields


async def test_resolve__entitled_user_skips_to_next_audience(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    upsell = await add(service, cid, "upsell", entitlement_check="pro", paywall_id="pw_pro")
    fallback = await add(service, cid, "fallback", paywall_id="pw_other")
    profile(store, "pro", entitlements=["pro", "extra"])
    profile(store, "free", entitlements=["extra"])
    assert (await resolve(service, cid, "free"))["audience_id"] == upsell["id"]
    answer = await resolve(service, cid, "pro")
    assert answer["audience_id"] == fallback["id"]
    assert answer["skipped"] == [{"audience_id": upsell["id"], "reason": "entitled"}]


@pytest.mark.parametrize(
    ("cap", "same_period", "next_period"),
    [
        ("2/day", timedelta(hours=11, minutes=59), timedelta(hours=12)),
        # Wednesday noon: the ISO week ends Sunday night, the next starts Monday.
        ("2/week", timedelta(days=4, hours=11), timedelta(days=4, hours=12)),
        ("2/month", timedelta(days=15, hours=11), timedelta(days=15, hours=12)),
        ("2/lifetime", timedelta(days=3650), None),
    ],
)
async def test_frequency_cap__calendar_periods(
    service: CampaignService,
    clock: MovableClock,
    cap: str,
    same_period: timedelta,
    next_period: timedelta | None,
) -> None:
    cid = await new_campaign(service)
    capped = await add(service, cid, "capped", frequency_cap=cap, paywall_id="pw")
    start = clock.now
    shown = [(await resolve(service, cid, "u1"))["audience_id"] for _ in range(3)]
    assert shown == [capped["id"], capped["id"], None]
    clock.now = start + same_period
    assert (await resolve(service, cid, "u1"))["audience_id"] is None
    assert (await resolve(service, cid, "u2"))["audience_id"] == capped["id"]
    if next_period is not None:
        clock.now = start + next_period
        assert (await resolve(service, cid, "u1"))["audience_id"] == capped["id"]


async def test_frequency_cap__per_session(service: CampaignService) -> None:
    cid = await new_campaign(service)
    capped = await add(service, cid, "capped", frequency_cap="1/session", paywall_id="pw")
    first = await resolve(service, cid, "u1", session_id="s1")
    again = await resolve(service, cid, "u1", session_id="s1")
    other = await resolve(service, cid, "u1", session_id="s2")
    assert [first["audience_id"], again["audience_id"], other["audience_id"]] == [
        capped["id"],
        None,
        capped["id"],
    ]
    assert again["skipped"] == [{"audience_id": capped["id"], "reason": "frequency_capped"}]


async def test_frequency_cap__request_id_replays_count_once(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    capped = await add(service, cid, "capped", frequency_cap="2/day", paywall_id="pw")
    replies = [await resolve(service, cid, "u1", request_id="r1") for _ in range(3)]
    assert all(r["audience_id"] == capped["id"] for r in replies)
    assert list(store.counters.values()) == [1]
    assert (await resolve(service, cid, "u1", request_id="r2"))["audience_id"] == capped["id"]
    assert (await resolve(service, cid, "u1", request_id="r3"))["audience_id"] is None
    with pytest.raises(ApiError) as raised:
        await resolve(service, cid, "someone_else", request_id="r1")
    assert raised.value.code == "request_id_reused"


async def test_frequency_cap__no_paywall__counts_nothing(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    await add(service, cid, "no paywall", frequency_cap="1/day")
    for _ in range(3):
        assert (await resolve(service, cid, "u1"))["paywall_id"] is None
    assert store.counters == {}


async def test_paused_campaign__resolves_to_nothing(service: CampaignService) -> None:
    cid = await new_campaign(service)
    await add(service, cid, "all", paywall_id="pw")
    await service.update_campaign(CALLER, PROJECT, cid, {"status": "paused"})
    answer = await resolve(service, cid, "u1")
    assert (answer["audience_id"], answer["paywall_id"], answer["reason"]) == (
        None,
        None,
        "campaign_paused",
    )


async def test_bad_filter__rule_error(service: CampaignService) -> None:
    cid = await new_campaign(service)
    with pytest.raises(RuleError):
        await add(service, cid, "bad", filters=[{"field": "x", "operator": "starts_with"}])


def test_parse_frequency_cap() -> None:
    assert parse_frequency_cap("3/day") == FrequencyCap(3, "day")
    assert str(parse_frequency_cap(" 1 / session ")) == "1/session"
    for bad in ("0/day", "3/hour", "day", "-1/week", "3/"):
        with pytest.raises(ValueError, match="frequency_cap"):
            parse_frequency_cap(bad)


def test_assign__split_within_two_points_over_10000_users() -> None:
    splits = [(10, 20, 30), (50, 50, 0), (33.33, 33.33, 33.34), (5, 90, 0)]
    for percentages in splits:
        experiment_id = f"exp_{secrets.token_hex(8)}"
        variants = [(f"v{n}", p) for n, p in enumerate(percentages) if p]
        tally: dict[str | None, int] = {}
        for n in range(10_000):
            chosen = experiments.assign(experiment_id, f"user{n}", variants)
            tally[chosen] = tally.get(chosen, 0) + 1
        for variant_id, percentage in variants:
            observed = tally.get(variant_id, 0) / 100
            assert abs(observed - percentage) <= 2, (percentages, variant_id, observed)
        holdout = 100 - sum(percentages)
        assert abs(tally.get(None, 0) / 100 - holdout) <= 2


def test_assign__sticky_and_independent_of_other_experiments() -> None:
    variants = [("a", 50.0), ("b", 50.0)]
    first = [experiments.assign("exp_1", f"u{n}", variants) for n in range(500)]
    again = [experiments.assign("exp_1", f"u{n}", variants) for n in range(500)]
    other = [experiments.assign("exp_2", f"u{n}", variants) for n in range(500)]
    assert first == again
    assert first != other


def test_probability_to_beat__agrees_with_sampling() -> None:
    rng = random.Random(7)
    for control, variant in [((10, 100), (20, 100)), ((30, 200), (25, 180)), ((0, 5), (1, 5))]:
        exact = experiments.probability_to_beat(*control, *variant)
        samples = 100_000
        wins = sum(
            rng.betavariate(variant[0] + 1, variant[1] - variant[0] + 1)
            > rng.betavariate(control[0] + 1, control[1] - control[0] + 1)
            for _ in range(samples)
        )
        assert abs(exact - wins / samples) < 0.01, (control, variant, exact)
    assert experiments.probability_to_beat(10, 100, 10, 100) == pytest.approx(0.5)


async def test_experiment__holdout_sees_no_paywall__and_is_exposed(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    audience = await add(
        service,
        cid,
        "exp",
        experiment={"variants": [{"paywall_id": "pw_a", "traffic_percentage": 50}]},
    )
    experiment = audience["experiment"]
    assert experiment["holdout_percentage"] == 50
    answers = [await resolve(service, cid, f"u{n}") for n in range(200)]
    held = [a for a in answers if a["holdout"]]
    assert held
    assert len(held) < 200
    for answer in held:
        assert answer["paywall_id"] is None
        assert answer["audience_id"] == audience["id"]
        assert answer["experiment_id"] == experiment["id"]
    assert len(store.exposure_docs) == 200


async def test_results_and_auto_promote(
    service: CampaignService, store: FakeCampaignStore, clock: MovableClock
) -> None:
    cid = await new_campaign(service)
    audience = await add(
        service,
        cid,
        "exp",
        experiment={
            "variants": [
                {"paywall_id": "pw_control", "traffic_percentage": 50},
                {"paywall_id": "pw_new", "traffic_percentage": 50},
            ],
            "auto_promote": True,
            "min_exposures": 20,
        },
    )
    experiment_id = audience["experiment"]["id"]
    control, challenger = (v["id"] for v in audience["experiment"]["variants"])
    exposed_at = clock.now
    answers = {f"u{n}": await resolve(service, cid, f"u{n}") for n in range(100)}
    # Converted before exposure: not a conversion. Every challenger user buys afterwards.
    buyers = [u for u, a in answers.items() if a["variant_id"] == challenger]
    for user_id in answers:
        bought = exposed_at + (timedelta(hours=1) if user_id in buyers else -timedelta(hours=1))
        store.profiles[f"{PROJECT}/{user_id}"] = {"events": {"purchase": {"last_at": bought}}}
    clock.now = exposed_at + timedelta(hours=2)
    report = await service.results(CALLER, PROJECT, experiment_id)
    rows = {row["variant_id"]: row for row in report["variants"]}
    assert rows[control]["conversions"] == 0
    assert rows[challenger]["conversions"] == len(buyers) == rows[challenger]["exposures"]
    assert rows[control]["probability_to_beat_control"] is None
    assert rows[challenger]["probability_to_beat_control"] > 0.99
    assert report["method"] == "bayesian_beta_binomial"
    promotion = report["promotion"]
    assert promotion["variant_id"] == challenger
    assert promotion["by"] == "auto_promote"
    assert promotion["at"] == clock.now
    assert "confidence threshold" in promotion["reason"]
    assert report["status"] == "promoted"
    for user_id in answers:
        assert (await resolve(service, cid, user_id))["paywall_id"] == "pw_new"


async def test_results__below_min_exposures__no_promotion(
    service: CampaignService, store: FakeCampaignStore
) -> None:
    cid = await new_campaign(service)
    audience = await add(
        service,
        cid,
        "exp",
        experiment={
            "variants": [
                {"paywall_id": "pw_control", "traffic_percentage": 50},
                {"paywall_id": "pw_new", "traffic_percentage": 50},
            ],
            "auto_promote": True,
        },
    )
    for n in range(40):
        await resolve(service, cid, f"u{n}")
    report = await service.results(CALLER, PROJECT, audience["experiment"]["id"])
    assert report["promotion"] is None
    assert sum(row["exposures"] for row in report["variants"]) == 40


async def test_pause_resume__same_assignment(service: CampaignService) -> None:
    cid = await new_campaign(service)
    audience = await add(
        service,
        cid,
        "exp",
        experiment={
            "variants": [
                {"paywall_id": "pw_a", "traffic_percentage": 30},
                {"paywall_id": "pw_b", "traffic_percentage": 70},
            ]
        },
    )
    experiment_id = audience["experiment"]["id"]
    before = [(await resolve(service, cid, f"u{n}"))["variant_id"] for n in range(50)]
    paused = await service.set_experiment_status(CALLER, PROJECT, experiment_id, "paused")
    assert paused["status"] == "paused"
    during = {(await resolve(service, cid, f"u{n}"))["paywall_id"] for n in range(50)}
    assert during == {"pw_a"}
    await service.set_experiment_status(CALLER, PROJECT, experiment_id, "running")
    after = [(await resolve(service, cid, f"u{n}"))["variant_id"] for n in range(50)]
    assert before == after


def test_summarize__holdout_row__conversion_only_after_first_exposure() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    experiment = {
        "variants": [
            {"id": "ctl", "paywall_id": "a", "traffic_percentage": 40},
            {"id": "new", "paywall_id": "b", "traffic_percentage": 40},
        ],
        "holdout_percentage": 20,
        "min_exposures": 1,
        "confidence_threshold": 0.99,
    }
    exposures: list[dict[str, Any]] = [
        {"user_id": "h1", "variant_id": None, "first_exposed_at": now},
        {"user_id": "h2", "variant_id": None, "first_exposed_at": now},
        {"user_id": "c1", "variant_id": "ctl", "first_exposed_at": now},
        {"user_id": "n1", "variant_id": "new", "first_exposed_at": now},
    ]
    converted_at = {"h1": now + timedelta(seconds=1), "h2": now, "n1": now + timedelta(days=1)}
    report = experiments.summarize(experiment, exposures, converted_at, now)
    assert report["holdout"] == {"percentage": 20, "exposures": 2, "conversions": 1, "rate": 0.5}
    rows = {row["variant_id"]: row for row in report["variants"]}
    assert (rows["ctl"]["conversions"], rows["new"]["conversions"]) == (0, 1)
    # 1/1 against 0/1 is far from 0.99 certain: nothing to promote.
    assert rows["new"]["probability_to_beat_control"] < 0.99
    assert report["winner"] is None
