"""Identity links written by the evaluator: what the sync service maps list records to users by."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audience_evaluator.identity import identity_links
from audience_evaluator.profiles import new_profile
from audience_shared.events import EventTracked, TraitsIdentified
from audience_shared.identity import identity_keys, trait_identity_keys
from tests.unit.evaluator.test_membership_service import PROJECT, T0, World, identify


def links_of(world: World) -> dict[str, str]:
    return {key: link["user_id"] for key, link in world.profiles.links.items()}


def profile_with(**traits: Any) -> dict[str, Any]:
    profile = new_profile(PROJECT, "u1")
    profile["traits"] = traits
    return profile


def test_identity_keys__normalize_email_and_phone__keep_external_id_as_given() -> None:
    assert identity_keys("Ext-1", " Ann@Example.COM ", "+1 (555) 000-1234") == [
        "external_id:Ext-1",
        "email:ann@example.com",
        "phone:+15550001234",
    ]
    assert identity_keys(None, "   ", "") == []
    assert trait_identity_keys({"email": 42, "phone": ["+1555"], "external_id": None}) == []


def test_identity_links__identify_naming_email__links_the_folded_traits() -> None:
    profile = profile_with(email="Ann@Example.com", phone="+1 555 0001", external_id="E1")
    events = [TraitsIdentified(project_id=PROJECT, user_id="u1", traits={"email": "x"})]
    assert identity_links(profile, events) == [
        {"_id": f"{PROJECT}|external_id:E1", "project_id": PROJECT, "user_id": "u1"},
        {"_id": f"{PROJECT}|email:ann@example.com", "project_id": PROJECT, "user_id": "u1"},
        {"_id": f"{PROJECT}|phone:+15550001", "project_id": PROJECT, "user_id": "u1"},
    ]


def test_identity_links__events_setting_no_identity_trait__link_nothing() -> None:
    profile = profile_with(email="ann@example.com")
    events = [
        TraitsIdentified(project_id=PROJECT, user_id="u1", traits={"plan": "pro"}),
        EventTracked(project_id=PROJECT, user_id="u1", event="email"),
    ]
    assert identity_links(profile, events) == []
    merged = profile_with(email="ann@example.com") | {"merged_into": f"{PROJECT}/u2"}
    identified = [TraitsIdentified(project_id=PROJECT, user_id="u1", traits={"email": "a"})]
    assert identity_links(merged, identified) == []


async def test_on_user_event__identify_with_email__links_the_user() -> None:
    world = World()
    await world.service.apply_user_events(
        [
            identify("u1", email="Ann@Example.com", phone="+1 555 0001"),
            identify("u2", plan="pro"),
        ]
    )
    assert links_of(world) == {
        f"{PROJECT}|email:ann@example.com": "u1",
        f"{PROJECT}|phone:+15550001": "u1",
    }


async def test_on_user_event__later_identify_changes_email__links_the_new_one_too() -> None:
    world = World()
    await world.service.apply_user_events([identify("u1", email="old@x.io")])
    await world.service.apply_user_events(
        [identify("u1", at=T0 + timedelta(minutes=1), email="new@x.io")]
    )
    assert links_of(world) == {f"{PROJECT}|email:old@x.io": "u1", f"{PROJECT}|email:new@x.io": "u1"}


async def test_on_user_event__key_linked_before__keeps_its_first_user() -> None:
    world = World()
    await world.service.apply_user_events([identify("u1", email="shared@x.io")])
    await world.service.apply_user_events([identify("u2", email="shared@x.io")])
    assert links_of(world) == {f"{PROJECT}|email:shared@x.io": "u1"}


async def test_on_user_event__older_identify_loses__links_the_traits_the_profile_kept() -> None:
    world = World()
    await world.service.apply_user_events([identify("u1", email="new@x.io")])
    await world.service.apply_user_events(
        [identify("u1", at=T0 - timedelta(days=1), email="stale@x.io")]
    )
    assert links_of(world) == {f"{PROJECT}|email:new@x.io": "u1"}


async def test_on_user_event__redelivered_after_links_were_lost__links_again() -> None:
    world = World()
    event = identify("u1", event_id="evt_1", email="ann@x.io")
    await world.service.apply_user_events([event])
    world.profiles.links.clear()  # a crash between the profile commit and the link writes
    await world.service.apply_user_events([event])
    assert links_of(world) == {f"{PROJECT}|email:ann@x.io": "u1"}


async def test_on_user_event__conflicting_write__links_only_once_committed() -> None:
    world = World()
    await world.service.apply_user_events([identify("u1", plan="free")])
    # Another process moves the profile on between our read and our write: the first round
    # conflicts, and the retry on a fresh read commits and links.
    original = world.profiles.commit_profiles
    rounds: list[set[str]] = []
    links_before_retry: dict[str, str] = {}

    async def racing(writes: Any) -> set[str]:
        if not rounds:
            world.profiles.docs[f"{PROJECT}/u1"]["version"] += 1
        else:
            links_before_retry.update(links_of(world))
        conflicts = await original(writes)
        rounds.append(conflicts)
        return conflicts

    world.profiles.commit_profiles = racing  # type: ignore[method-assign]
    await world.service.apply_user_events(
        [identify("u1", at=datetime(2026, 1, 11, tzinfo=UTC), email="ann@x.io")]
    )
    assert rounds == [{f"{PROJECT}/u1"}, set()]
    assert links_before_retry == {}
    assert links_of(world) == {f"{PROJECT}|email:ann@x.io": "u1"}


async def test_on_user_event__links_fail_while_delivering__retry_links_and_counts_once() -> None:
    world = World()
    await world.audience("aud_p", "Users with plan=premium")
    world.profiles.fail_next_links = ConnectionError("store down")
    event = identify("u1", plan="premium", email="ann@example.com", event_id="e1")
    with pytest.raises(ConnectionError):
        await world.service.apply_user_events([event])
    # Saved while the change was delivered: the failure leaves it unmarked, so the redelivered
    # batch delivers it again (subscribers drop the duplicate by event id) and counts it once.
    assert links_of(world) == {}
    assert world.profiles.markers == set()
    await world.service.apply_user_events([event])
    assert links_of(world) == {f"{PROJECT}|email:ann@example.com": "u1"}
    assert world.memberships.counts["aud_p"] == 1
    assert len({change.event_id for change in world.publisher.published}) == 1
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert world.profiles.markers == {profile["written_by"]}
