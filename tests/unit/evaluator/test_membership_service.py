"""MembershipService with in-memory fakes: folding, transitions, dedupe, time, lifecycle."""

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audience_evaluator.outbox import (
    change_event_id,
    deciding_write,
    restored_change,
    stored_change,
)
from audience_evaluator.registry import AudienceRegistry
from audience_evaluator.services import (
    MARKS_CHECKED_AFTER_S,
    OUTBOX_CLEAR_DELAY,
    OUTBOX_GRACE,
    AudienceLifecycleService,
    MembershipService,
    SweepService,
)
from audience_shared.events import (
    EventTracked,
    ListMembershipChanged,
    MembershipChanged,
    TraitsIdentified,
    UserEventBase,
    UsersAliased,
)
from audience_shared.rules import parse_criteria
from tests.unit.evaluator.fakes import (
    FakeCatalog,
    FakeMembershipStore,
    FakeProfileStore,
    FakePublisher,
)

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
PROJECT = "prj_test"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class World:
    def __init__(self) -> None:
        self.clock = Clock(T0)
        self.profiles = FakeProfileStore()
        self.memberships = FakeMembershipStore(self.profiles)
        self.publisher = FakePublisher()
        self.catalog = FakeCatalog()
        self.registry = AudienceRegistry()
        self.service = MembershipService(
            self.profiles,
            self.memberships,
            self.publisher,
            self.registry,
            self.clock,
        )
        self.lifecycle = AudienceLifecycleService(
            self.catalog,
            self.profiles,
            self.memberships,
            self.service,
            self.registry,
            self.clock,
            chunk=2,
        )
        self.sweeper = SweepService(self.profiles, self.service, self.clock)

    async def audience(self, audience_id: str, criteria: str, version: int = 1) -> None:
        self.catalog.audiences[audience_id] = {
            "_id": audience_id,
            "project_id": PROJECT,
            "rule": parse_criteria(criteria).model_dump(mode="json"),
            "rule_version": version,
            "archived": False,
        }
        await self.lifecycle.on_change(audience_id, "created", version)

    def members(self, audience_id: str) -> set[str]:
        return {pid.split("/", 1)[1] for pid in self.memberships.members(audience_id)}

    def another_process(
        self,
        publisher: FakePublisher | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        **profile_methods: Callable[..., Any],
    ) -> MembershipService:
        """A second evaluator process over the same stores, with its own publisher (by default
        the world's) and, if given, some profile-store methods replaced."""
        profiles = ProfilesWith(self.profiles, **profile_methods) if profile_methods else None
        return MembershipService(
            profiles or self.profiles,  # type: ignore[arg-type]
            self.memberships,
            publisher or self.publisher,
            self.registry,
            self.clock,
            monotonic,
        )


def identify(
    user: str, at: datetime = T0, event_id: str | None = None, **traits: Any
) -> TraitsIdentified:
    extra = {"event_id": event_id} if event_id else {}
    return TraitsIdentified(project_id=PROJECT, user_id=user, traits=traits, timestamp=at, **extra)


def track(
    user: str,
    event: str,
    at: datetime = T0,
    event_id: str | None = None,
    properties: dict[str, Any] | None = None,
) -> EventTracked:
    extra = {"event_id": event_id} if event_id else {}
    return EventTracked(
        project_id=PROJECT,
        user_id=user,
        event=event,
        timestamp=at,
        properties=properties or {},
        **extra,
    )


@pytest.fixture
def world() -> World:
    return World()


async def test_on_user_event__matching_trait__enters_and_publishes(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events(
        [identify("u1", plan="premium"), identify("u2", plan="free")]
    )
    assert world.members("aud_p") == {"u1"}
    assert world.memberships.counts["aud_p"] == 1
    assert [(c.type, c.user_id) for c in world.publisher.published] == [
        ("membership.entered", "u1")
    ]


async def test_on_user_event__redelivered__is_idempotent(world: World) -> None:
    await world.audience("aud_p", "Users who triggered event=app_open more than 2 times")
    events = [track("u1", "app_open", event_id=f"e{i}") for i in range(3)]
    await world.service.apply_user_events(events)
    await world.service.apply_user_events(events)
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["event_count"] == 3
    assert world.members("aud_p") == {"u1"}
    assert len(world.publisher.published) == 1


async def test_on_user_event__out_of_order_identify__older_value_loses(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events(
        [identify("u1", at=T0 + timedelta(hours=1), plan="premium")]
    )
    await world.service.apply_user_events([identify("u1", at=T0, plan="free")])
    assert world.members("aud_p") == {"u1"}


async def test_trait_change__user_no_longer_matches__exits(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    await world.service.apply_user_events(
        [identify("u1", at=T0 + timedelta(minutes=1), plan="free")]
    )
    assert world.members("aud_p") == set()
    assert [c.type for c in world.publisher.published] == [
        "membership.entered",
        "membership.exited",
    ]
    assert world.memberships.counts["aud_p"] == 0


async def test_membership__held_by_the_profile__with_the_time_joined(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.audience("aud_f", "Users with plan=free")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert (profile["audiences"], profile["joined"]) == (["aud_p"], {"aud_p": T0})
    world.clock.advance(timedelta(hours=1))
    await world.service.apply_user_events([identify("u1", at=world.clock.now, plan="free")])
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert (profile["audiences"], profile["joined"]) == (["aud_f"], {"aud_f": world.clock.now})
    world.catalog.audiences["aud_f"]["archived"] = True
    await world.lifecycle.on_change("aud_f", "archived", 1)
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert (profile["audiences"], profile["joined"]) == ([], {})


async def test_time_passing__active_within_7_days__exits_without_any_event(world: World) -> None:
    await world.audience("aud_a", "Users who did app_open in the last 7 days")
    await world.service.apply_user_events([track("u1", "app_open")])
    assert world.members("aud_a") == {"u1"}
    world.clock.now = T0 + timedelta(days=7, seconds=1)
    await world.sweeper.sweep_once()
    assert world.members("aud_a") == set()
    assert world.publisher.published[-1].reason == "time"


async def test_sweeper__due_times_it_wrote__found_between_store_scans(world: World) -> None:
    await world.audience("aud_a", "Users who did app_open in the last 7 days")
    sweeper = SweepService(world.profiles, world.service, world.clock, scan_spacing=1e9)
    await sweeper.sweep_once()  # the first pass scans the store; the next ones will not
    await world.service.apply_user_events([track("u1", "app_open")])
    world.clock.now = T0 + timedelta(days=7, seconds=1)
    await sweeper.sweep_once()
    assert world.members("aud_a") == set()
    assert world.publisher.published[-1].reason == "time"


async def test_sweeper__due_times_another_process_wrote__found_by_the_store_scan(
    world: World,
) -> None:
    await world.audience("aud_a", "Users who did app_open in the last 7 days")
    await world.service.apply_user_events([track("u1", "app_open")])
    other = world.another_process()
    world.clock.now = T0 + timedelta(days=7, seconds=1)
    await SweepService(world.profiles, other, world.clock).sweep_once()
    assert world.members("aud_a") == set()


async def test_sweeper__given_partitions__scans_the_store_on_its_next_pass(world: World) -> None:
    await world.audience("aud_a", "Users who did app_open in the last 7 days")
    sweeper = SweepService(world.profiles, world.service, world.clock, scan_spacing=1e9)
    await sweeper.sweep_once()  # the first pass scans the store; the next ones will not
    other = world.another_process()
    await other.apply_user_events([track("u1", "app_open")])  # due time kept by `other` only
    world.clock.now = T0 + timedelta(days=7, seconds=1)
    await sweeper.sweep_once()
    assert world.members("aud_a") == {"u1"}  # not this process's due time, and no scan yet
    sweeper.request_scan()  # u1's partition was just assigned to this process
    await sweeper.sweep_once()
    assert world.members("aud_a") == set()


async def test_time_passing__did_not_purchase_in_30_days__enters_when_purchase_ages_out(
    world: World,
) -> None:
    await world.audience("aud_lapsed", "Users who did not purchase in the last 30 days")
    await world.service.apply_user_events([track("u1", "purchase")])
    assert world.members("aud_lapsed") == set()
    world.clock.now = T0 + timedelta(days=29)
    await world.sweeper.sweep_once()
    assert world.members("aud_lapsed") == set()
    world.clock.now = T0 + timedelta(days=30, seconds=1)
    await world.sweeper.sweep_once()
    assert world.members("aud_lapsed") == {"u1"}


async def test_new_audience__existing_profiles__backfilled_and_ready(world: World) -> None:
    await world.service.apply_user_events(
        [identify(f"u{i}", plan="premium" if i % 2 else "free") for i in range(7)]
    )
    await world.audience("aud_p", "Users with plan=premium")
    assert world.members("aud_p") == {"u1", "u3", "u5"}
    assert world.catalog.states["aud_p"]["status"] == "ready"
    assert world.memberships.counts["aud_p"] == 3


async def test_rule_change__users_no_longer_matching__exit(world: World) -> None:
    await world.service.apply_user_events(
        [identify("u1", plan="premium", country="US"), identify("u2", plan="premium", country="DE")]
    )
    await world.audience("aud_p", "Users with plan=premium")
    await world.audience("aud_p", "Users with plan=premium AND country=US", version=2)
    assert world.members("aud_p") == {"u1"}
    assert world.memberships.counts["aud_p"] == 1


async def test_archive__removes_memberships_with_exit_events(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    world.catalog.audiences["aud_p"]["archived"] = True
    await world.lifecycle.on_change("aud_p", "deleted", 1)
    assert world.members("aud_p") == set()
    assert world.publisher.published[-1].type == "membership.exited"
    assert world.catalog.states["aud_p"]["status"] == "archived"


async def test_crash_after_profile_write__outbox_replayed_on_next_touch(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")

    async def crash(changes: object) -> None:
        raise ConnectionError("broker down")

    world.publisher.publish = crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await world.service.apply_user_events([identify("u1", plan="premium", event_id="x")])
    assert world.profiles.docs[f"{PROJECT}/u1"]["outbox"]
    world.publisher.publish = FakePublisher.publish.__get__(world.publisher)  # type: ignore[method-assign]
    # The redelivered batch is a duplicate, but the outbox still goes out.
    await world.service.apply_user_events([identify("u1", plan="premium", event_id="x")])
    assert [c.type for c in world.publisher.published] == ["membership.entered"]
    assert world.members("aud_p") == {"u1"}
    assert world.memberships.counts["aud_p"] == 1  # the replay did not count twice
    # Delivered, an event outbox stays (with its marker) until the profile's next write: no
    # background write, and the sweeper has nothing to do for it.
    world.clock.advance(OUTBOX_GRACE)
    assert await world.service.clear_delivered() == 0
    assert await world.sweeper.sweep_once() == 0
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["outbox"]
    assert profile["due_at"] is None
    assert world.profiles.markers == {profile["written_by"]}


async def test_crash_between_counting_and_marking__replay_counts_nothing_twice(
    world: World,
) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    mark = world.profiles.mark_delivered

    async def store_gone(outboxes: object) -> None:
        raise ConnectionError("store down")

    world.profiles.mark_delivered = store_gone  # type: ignore[method-assign,assignment]
    with pytest.raises(ConnectionError):
        await world.service.apply_user_events([identify("u1", plan="premium", event_id="x")])
    assert world.memberships.counts["aud_p"] == 1
    world.profiles.mark_delivered = mark  # type: ignore[method-assign]
    await world.service.apply_user_events([identify("u1", plan="premium", event_id="x")])
    assert world.memberships.counts["aud_p"] == 1


class ProfilesWith:
    """The shared profile store as another process sees it, with some methods replaced."""

    def __init__(self, profiles: FakeProfileStore, **methods: Callable[..., Any]) -> None:
        self._profiles = profiles
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> object:
        return getattr(self._profiles, name)


async def writer_held_at_publish(
    world: World,
    monotonic: Callable[[], float] = time.monotonic,
    event: UserEventBase | None = None,
) -> tuple[asyncio.Event, asyncio.Task[int]]:
    """A second process that has written u1's profile (by default entering it into aud_p) and
    waits, before delivering (publishing and counting), until the event is set."""
    may_publish = asyncio.Event()

    async def held_after_write(*args: Any, **kwargs: Any) -> set[str]:
        conflicts = await world.profiles.commit_profiles(*args, **kwargs)
        await may_publish.wait()
        return conflicts

    writer = world.another_process(FakePublisher(), monotonic, commit_profiles=held_after_write)
    was = world.profiles.docs.get(f"{PROJECT}/u1", {}).get("version", 0)
    writing = asyncio.create_task(
        writer.apply_user_events([event or identify("u1", plan="premium")])
    )
    while world.profiles.docs.get(f"{PROJECT}/u1", {}).get("version", 0) == was:
        await asyncio.sleep(0)
    return may_publish, writing


async def test_outbox_taken_over__its_writer_delivers_it_meanwhile__counted_once(
    world: World,
) -> None:
    """Another process reads a profile whose outbox its writer has not marked yet, so it replays
    the outbox; the writer then counts, marks and settles (its counter token may go at once).
    The replay sees the mark right before counting and leaves the count alone."""
    await world.audience("aud_p", "Users with plan=premium")
    writer_may_publish, writing = await writer_held_at_publish(world)

    class WriterFinishesNow(FakePublisher):
        async def publish(self, changes: Sequence[MembershipChanged]) -> None:
            await super().publish(changes)
            writer_may_publish.set()
            await writing

    other = world.another_process(WriterFinishesNow())
    await other.apply_user_events([identify("u1", plan="premium", age=30)])
    assert world.memberships.counts["aud_p"] == 1
    assert world.members("aud_p") == {"u1"}


class Ticks:
    """A monotonic clock for delivery deadlines, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("dropped_since", [False, True], ids=["carried", "dropped_since"])
async def test_outbox_taken_over__its_late_writer__counts_it_once(
    world: World, dropped_since: bool
) -> None:
    """The writer is slow to deliver; another process takes its outbox over, delivers it first,
    and settles it (its counter token may go). The writer, late, checks the marks before counting
    and leaves the count alone. When the profile's next write has dropped the delivered outbox
    (and its markers are gone), no outbox names the change any more, so it went out."""
    await world.audience("aud_p", "Users with plan=premium")
    ticks = Ticks()
    writer_may_publish, writing = await writer_held_at_publish(world, ticks)
    other = world.another_process(FakePublisher())
    await other.apply_user_events([identify("u1", plan="premium", age=30)])
    assert world.memberships.counts["aud_p"] == 1
    if dropped_since:
        await other.apply_user_events([identify("u1", plan="premium", age=31)])
        assert world.profiles.docs[f"{PROJECT}/u1"]["outbox"] == []
        world.profiles.markers.clear()
    ticks.now += MARKS_CHECKED_AFTER_S + 0.1
    writer_may_publish.set()
    await writing
    assert world.memberships.counts["aud_p"] == 1
    assert world.members("aud_p") == {"u1"}


async def test_count_past_its_deadline__marks_checked_again__counted_once(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    world.memberships.late_next = 2
    checked: list[object] = []
    marks = world.profiles.marked_writes

    async def marked_writes(
        writes: Collection[tuple[str, int, str | None]],
    ) -> set[tuple[str, int]]:
        checked.append(writes)
        return await marks(writes)

    world.profiles.marked_writes = marked_writes  # type: ignore[method-assign]
    await world.service.apply_user_events([identify("u1", plan="premium")])
    assert world.memberships.counts["aud_p"] == 1
    assert len(checked) == 2  # once before each count that followed a late one


async def test_outbox_carried_twice__the_middle_writer_delivers_it__counted_once(
    world: World,
) -> None:
    """A writes u1's entry and stalls; B takes the outbox over and stalls too; C takes it over
    from B. B then delivers it while C is about to count: C finds B's mark through the writes
    its profile names in `carried_from`, and A, late, through C's."""
    await world.audience("aud_p", "Users with plan=premium")
    ticks = Ticks()
    a_may_publish, a_writing = await writer_held_at_publish(world, ticks)
    a_token = world.profiles.docs[f"{PROJECT}/u1"]["written_by"]
    b_may_publish, b_writing = await writer_held_at_publish(
        world, event=identify("u1", plan="premium", age=30)
    )
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["carried_from"] == [f"1|{a_token}"]

    async def b_finishes_before_the_check(profile_ids: Sequence[str]) -> dict[str, Any]:
        """B delivers (counts, marks and settles) as C checks the marks."""
        b_may_publish.set()
        await b_writing
        return await world.profiles.outboxes_now(profile_ids)

    c = world.another_process(FakePublisher(), outboxes_now=b_finishes_before_the_check)
    await c.apply_user_events([identify("u1", plan="premium", age=31)])
    assert len(world.profiles.docs[f"{PROJECT}/u1"]["carried_from"]) == 2
    assert world.memberships.counts["aud_p"] == 1
    ticks.now += MARKS_CHECKED_AFTER_S + 0.1
    a_may_publish.set()
    await a_writing
    assert world.memberships.counts["aud_p"] == 1
    assert world.members("aud_p") == {"u1"}


async def test_delivered_outbox__carried_on_by_another_write__keeps_its_marker(
    world: World,
) -> None:
    await world.audience("aud_recent", "Users who did app_open in the last 1 days")
    await world.service.apply_user_events([track("u1", "app_open")])
    world.clock.advance(timedelta(days=1, seconds=1))
    assert await world.sweeper.sweep_once() == 1
    pid = f"{PROJECT}/u1"
    profile = world.profiles.docs[pid]
    delivered = profile["written_by"]
    assert delivered in world.profiles.markers
    # Another process read the profile before the mark, carried the outbox on in its own write,
    # and will look for this marker before it counts.
    profile["carried_from"] = [f"{profile['version']}|{delivered}"]
    profile["version"] += 1
    profile["written_by"] = "another-process"
    world.clock.advance(OUTBOX_CLEAR_DELAY)
    assert await world.service.clear_delivered() == 0
    await world.lifecycle.drop_unneeded_markers()
    assert delivered in world.profiles.markers


async def test_outbox_an_older_version_carried_on__its_marker_of_the_first_write__counted_once(
    world: World,
) -> None:
    """Older versions marked each outbox by profile and version, and carried outboxes on without
    naming the writes they came from: a replay checks those markers for every version since the
    change, so a change an older process delivered from an earlier version is not counted again."""
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    assert world.memberships.counts["aud_p"] == 1
    pid = f"{PROJECT}/u1"
    profile = world.profiles.docs[pid]
    # As an older version left it: version 1 delivered and marked as an outbox, and version 2
    # written by another old process that had read version 1 before the mark, then died.
    world.profiles.markers = {f"{pid}|1"}
    profile["version"], profile["written_by"] = 2, "an-old-process"
    other = world.another_process(FakePublisher())
    await other.apply_user_events([identify("u1", plan="premium", age=30)])
    assert world.memberships.counts["aud_p"] == 1
    assert world.members("aud_p") == {"u1"}


async def test_unneeded_markers__the_ones_no_outbox_names__dropped(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    pid = f"{PROJECT}/u1"
    first = world.profiles.docs[pid]["written_by"]
    # The next write drops the delivered outbox: no outbox names the first write any more.
    await world.service.apply_user_events([identify("u1", plan="free")])
    second = world.profiles.docs[pid]["written_by"]
    assert world.profiles.markers == {first, second}
    await world.lifecycle.drop_unneeded_markers()
    assert world.profiles.markers == {second}


async def test_time_outbox__delivered__cleared_in_the_background(world: World) -> None:
    await world.audience("aud_recent", "Users who did app_open in the last 1 days")
    await world.service.apply_user_events([track("u1", "app_open")])
    world.clock.advance(timedelta(days=1, seconds=1))
    assert await world.sweeper.sweep_once() == 1
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert [restored_change(profile, c).type for c in profile["outbox"]] == ["membership.exited"]
    # The sweeper's safety net in case this process dies before delivering.
    assert profile["due_at"] == world.clock.now + OUTBOX_GRACE
    assert await world.service.clear_delivered() == 0
    world.clock.advance(OUTBOX_CLEAR_DELAY)
    assert await world.service.clear_delivered() == 1
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["outbox"] == []
    assert profile["due_at"] is None
    # No outbox names the write any more: its marker goes with the next reconcile.
    await world.lifecycle.drop_unneeded_markers()
    assert world.profiles.markers == set()


async def test_delivered_outbox__another_process_drops_it_without_replaying(
    world: World,
) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    other = world.another_process()
    # The user's partition moved to another process: it finds the delivered outbox by its marker.
    await other.apply_user_events([identify("u1", plan="premium", age=30)])
    assert [c.type for c in world.publisher.published] == ["membership.entered"]
    assert world.memberships.counts["aud_p"] == 1
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["outbox"] == []
    assert profile["due_at"] is None
    await other.clear_delivered()
    await world.lifecycle.drop_unneeded_markers()
    assert world.profiles.markers == set()


async def test_delivered_outbox__next_write_drops_it_without_replaying(world: World) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    await world.service.apply_user_events([identify("u1", plan="premium")])
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["outbox"]  # delivered, not cleared
    assert profile["due_at"] is None  # redelivered events replay it after a crash, not the sweeper
    await world.service.apply_user_events([identify("u1", plan="premium", age=3)])
    assert [c.type for c in world.publisher.published] == ["membership.entered"]
    profile = world.profiles.docs[f"{PROJECT}/u1"]
    assert profile["outbox"] == []
    assert profile["due_at"] is None
    assert await world.sweeper.sweep_once() == 0
    await world.lifecycle.drop_unneeded_markers()
    assert world.profiles.markers == set()  # no outbox names either write


def list_event(
    user: str, audience_id: str, member: bool, at: datetime = T0
) -> ListMembershipChanged:
    return ListMembershipChanged(
        project_id=PROJECT, user_id=user, audience_id=audience_id, member=member, timestamp=at
    )


async def static_audience(world: World, audience_id: str) -> None:
    world.catalog.audiences[audience_id] = {
        "_id": audience_id,
        "project_id": PROJECT,
        "kind": "static",
        "rule": None,
        "rule_version": 1,
        "archived": False,
    }
    await world.lifecycle.on_change(audience_id, "created", 1)


async def test_static_list__added_then_removed__enters_then_exits(world: World) -> None:
    await static_audience(world, "aud_list")
    await world.service.apply_user_events([list_event("u1", "aud_list", True)])
    assert world.members("aud_list") == {"u1"}
    await world.service.apply_user_events(
        [list_event("u1", "aud_list", False, at=T0 + timedelta(seconds=1))]
    )
    assert world.members("aud_list") == set()


async def test_static_list__stale_add_after_remove__ignored(world: World) -> None:
    await static_audience(world, "aud_list")
    await world.service.apply_user_events(
        [list_event("u1", "aud_list", False, at=T0 + timedelta(seconds=5))]
    )
    await world.service.apply_user_events([list_event("u1", "aud_list", True, at=T0)])
    assert world.members("aud_list") == set()


async def test_identify_with_anonymous_id__merges_prior_events_once(world: World) -> None:
    await world.audience("aud_openers", "Users who triggered event=app_open at least 3 times")
    anon = "anonymous:a1"
    await world.service.apply_user_events(
        [track(anon, "app_open", event_id=f"a{i}") for i in range(2)]
    )
    await world.service.apply_user_events([track("u1", "app_open", event_id="u-1")])
    assert world.members("aud_openers") == set()
    link = TraitsIdentified(
        project_id=PROJECT, user_id="u1", anonymous_id="a1", traits={"plan": "free"}, timestamp=T0
    )
    await world.service.apply_user_events([link])
    assert world.members("aud_openers") == {"u1"}
    user = world.profiles.docs[f"{PROJECT}/u1"]
    assert user["event_count"] == 3
    assert world.profiles.docs[f"{PROJECT}/{anon}"]["merged_into"] == f"{PROJECT}/u1"
    # Merging twice changes nothing.
    again = TraitsIdentified(project_id=PROJECT, user_id="u1", anonymous_id="a1", timestamp=T0)
    await world.service.apply_user_events([again])
    assert world.profiles.docs[f"{PROJECT}/u1"]["event_count"] == 3


async def test_merged_anonymous_member__exits_and_user_enters(world: World) -> None:
    await world.audience("aud_openers", "Users who triggered event=app_open at least 2 times")
    anon = "anonymous:a2"
    await world.service.apply_user_events(
        [track(anon, "app_open", event_id=f"b{i}") for i in range(2)]
    )
    assert world.members("aud_openers") == {anon}
    alias = UsersAliased(project_id=PROJECT, user_id="u2", previous_id=anon, timestamp=T0)
    await world.service.apply_user_events([alias])
    assert world.members("aud_openers") == {"u2"}
    assert world.memberships.counts["aud_openers"] == 1


async def test_events_for_merged_anonymous_id__land_on_the_user(world: World) -> None:
    await world.audience("aud_openers", "Users who triggered event=app_open at least 2 times")
    anon = "anonymous:a3"
    await world.service.apply_user_events([track(anon, "app_open", event_id="c0")])
    await world.service.apply_user_events(
        [UsersAliased(project_id=PROJECT, user_id="u3", previous_id=anon, timestamp=T0)]
    )
    await world.service.apply_user_events([track(anon, "app_open", event_id="c1")])
    assert world.members("aud_openers") == {"u3"}
    assert world.profiles.docs[f"{PROJECT}/u3"]["event_count"] == 2


async def test_sweeper__stranded_time_outbox__delivered_without_new_events(world: World) -> None:
    await world.audience("aud_recent", "Users who did app_open in the last 1 days")
    await world.service.apply_user_events([track("u9", "app_open")])

    async def crash(changes: object) -> None:
        raise ConnectionError("broker down")

    world.publisher.publish = crash  # type: ignore[method-assign]
    world.clock.advance(timedelta(days=1, seconds=1))
    with pytest.raises(ConnectionError):
        await world.sweeper.sweep_once()  # the exit is decided and written, not delivered
    world.publisher.publish = FakePublisher.publish.__get__(world.publisher)  # type: ignore[method-assign]
    # No event will ever bring this profile back: the sweeper replays the outbox after its grace.
    restarted = MembershipService(
        world.profiles, world.memberships, world.publisher, world.registry, world.clock
    )
    sweeper = SweepService(world.profiles, restarted, world.clock, scan_spacing=0)
    await sweeper.sweep_once()
    assert [c.type for c in world.publisher.published] == ["membership.entered"]
    world.clock.advance(OUTBOX_GRACE)
    await sweeper.sweep_once()
    assert [c.type for c in world.publisher.published] == [
        "membership.entered",
        "membership.exited",
    ]
    assert world.memberships.counts["aud_recent"] == 0


BIG_PURCHASES = "Users who triggered event=purchase where amount > 100 at least 2 times"


async def test_new_property_filtered_audience__counts_past_events(world: World) -> None:
    await world.service.apply_user_events(
        [
            track("u1", "purchase", at=T0, properties={"amount": 150}),
            track("u1", "purchase", at=T0 + timedelta(minutes=1), properties={"amount": 120}),
            track("u2", "purchase", at=T0, properties={"amount": 150}),
            track("u2", "purchase", at=T0 + timedelta(minutes=1), properties={"amount": 20}),
        ]
    )
    await world.audience("aud_big", BIG_PURCHASES)
    assert world.members("aud_big") == {"u1"}
    # A later event adds to the rebuilt counter instead of starting from zero.
    await world.service.apply_user_events(
        [track("u2", "purchase", at=T0 + timedelta(minutes=2), properties={"amount": 500})]
    )
    assert world.members("aud_big") == {"u1", "u2"}
    counter = next(iter(world.profiles.docs[f"{PROJECT}/u2"]["counters"].values()))
    assert counter["count"] == 2


async def test_counter_dropped_with_its_audience__rebuilt_when_it_returns(world: World) -> None:
    await world.audience("aud_big", BIG_PURCHASES)
    await world.service.apply_user_events(
        [track("u1", "purchase", properties={"amount": 150}, event_id="p1")]
    )
    await world.lifecycle.archive("aud_big")
    # Counted while no audience needs the counter: nothing maintains it meanwhile.
    await world.service.apply_user_events(
        [track("u1", "purchase", at=T0 + timedelta(hours=1), properties={"amount": 300})]
    )
    assert world.profiles.docs[f"{PROJECT}/u1"]["counters"] == {}
    await world.audience("aud_big2", BIG_PURCHASES)
    assert world.members("aud_big2") == {"u1"}


async def test_rebuilt_counter__history_shorter_than_all_time__marked_truncated(
    world: World,
) -> None:
    from audience_evaluator.profiles import TRACKED_KEPT

    events = [
        track("u1", "purchase", at=T0 + timedelta(seconds=i), properties={"amount": 150})
        for i in range(TRACKED_KEPT + 5)
    ]
    await world.service.apply_user_events(events)
    await world.audience("aud_big", BIG_PURCHASES)
    counter = next(iter(world.profiles.docs[f"{PROJECT}/u1"]["counters"].values()))
    assert counter["count"] == TRACKED_KEPT
    assert counter["truncated"] is True


async def test_new_user__negative_condition_on_other_events__enters(world: World) -> None:
    await world.audience("aud_lapsed", "Users who did not purchase in the last 30 days")
    await world.service.apply_user_events([track("u1", "app_open")])
    assert world.members("aud_lapsed") == {"u1"}


async def test_refresh_requested__rebuilds_once_even_when_another_process_built_it(
    world: World,
) -> None:
    await world.audience("aud_p", "Users with plan=premium")
    world.catalog.states["aud_p"]["build_owner"] = "another-process"
    world.clock.now = T0 + timedelta(hours=1)
    requested = T0 + timedelta(minutes=30)
    await world.lifecycle.on_change("aud_p", "refresh_requested", 1, requested)
    assert world.catalog.states["aud_p"]["build_claimed_at"] == world.clock.now
    assert world.catalog.states["aud_p"]["last_refreshed_at"] == world.clock.now
    # The same request delivered again (or to a second process) does not rebuild again.
    world.catalog.states["aud_p"]["build_owner"] = "another-process"
    world.clock.now = T0 + timedelta(hours=2)
    await world.lifecycle.on_change("aud_p", "refresh_requested", 1, requested)
    assert world.catalog.states["aud_p"]["last_refreshed_at"] == T0 + timedelta(hours=1)


async def test_profile_from_before_counter_history__keeps_its_counters(world: World) -> None:
    await world.audience("aud_big", BIG_PURCHASES)
    await world.service.apply_user_events(
        [
            track("u1", "purchase", at=T0, properties={"amount": 150}, event_id="p1"),
            track("u1", "purchase", at=T0, properties={"amount": 160}, event_id="p2"),
        ]
    )
    assert world.members("aud_big") == {"u1"}
    stored = world.profiles.docs[f"{PROJECT}/u1"]
    del stored["counted"], stored["tracked"]  # as written before counters had a history
    world.clock.now = T0 + timedelta(minutes=5)
    await world.service.apply_user_events([track("u1", "app_open")])
    assert world.members("aud_big") == {"u1"}
    assert next(iter(stored["counters"].values()))["count"] == 2


async def test_huge_event_properties__left_out_of_the_history(world: World) -> None:
    await world.service.apply_user_events(
        [track("u1", "purchase", properties={"amount": 150, "blob": "x" * 10_000})]
    )
    (entry,) = world.profiles.docs[f"{PROJECT}/u1"]["tracked"]
    assert entry["p"] is None
    await world.audience("aud_big", BIG_PURCHASES)
    counter = next(iter(world.profiles.docs[f"{PROJECT}/u1"]["counters"].values()))
    assert counter["truncated"] is True


async def test_audiences_referring_to_others__decided_in_dependency_order_in_one_pass(
    world: World,
) -> None:
    await world.audience("aud_a", "Users with plan=premium")
    # Created before the audience it refers to: evaluated after it all the same.
    await world.audience("aud_c", "Users not in audience id aud_b")
    await world.audience("aud_b", "Users in audience id aud_a AND age >= 30")
    await world.audience("aud_d", "Users with country=US")
    await world.service.apply_user_events([identify("u1", plan="premium", age=31)])
    assert (world.members("aud_a"), world.members("aud_b"), world.members("aud_c")) == (
        {"u1"},
        {"u1"},
        set(),
    )
    # A change only aud_a's rule reads moves the two that refer to it, through aud_b.
    await world.service.apply_user_events([identify("u1", plan="free")])
    assert (world.members("aud_a"), world.members("aud_b"), world.members("aud_c")) == (
        set(),
        set(),
        {"u1"},
    )
    assert world.members("aud_d") == set()


def entered_aud_p(version: int) -> MembershipChanged:
    """u1's entry into aud_p, decided by the write of `version`."""
    return MembershipChanged(
        type="membership.entered",
        event_id=change_event_id(f"{PROJECT}/u1", "aud_p", version),
        project_id=PROJECT,
        audience_id="aud_p",
        user_id="u1",
        occurred_at=T0,
        version=version,
        reason="event",
    )


def test_outbox_entry__round_trip__keeps_only_an_id_it_cannot_derive() -> None:
    profile = {"_id": f"{PROJECT}/u1", "project_id": PROJECT, "user_id": "u1"}
    derived = entered_aud_p(4)
    older = derived.model_copy(update={"event_id": "evt_0123456789abcdef0123456789abcdef"})
    assert older.event_id not in stored_change(derived, profile["_id"])
    assert older.event_id in stored_change(older, profile["_id"])
    exited = derived.model_copy(
        update={
            "type": "membership.exited",
            "audience_id": "aud|with|bars",
            "occurred_at": T0 + timedelta(microseconds=123457),
            "reason": "time",
            "event_id": change_event_id(profile["_id"], "aud|with|bars", 4),
        }
    )
    for change in (derived, older, exited):
        assert isinstance(stored_change(change, profile["_id"]), str)
        assert restored_change(profile, stored_change(change, profile["_id"])) == change
    # An entry written in full by an older version reads back as it was.
    assert restored_change(profile, older.model_dump()) == older


def test_outbox_entry__carried_over__names_the_write_that_decided_it() -> None:
    profile: dict[str, Any] = {
        "_id": f"{PROJECT}/u1",
        "project_id": PROJECT,
        "user_id": "u1",
        "version": 5,
        "written_by": "w5",
    }
    decided_here, carried = entered_aud_p(5), entered_aud_p(3)
    older = carried.model_copy(update={"event_id": "evt_0123456789abcdef0123456789abcdef"})
    fresh_entry = stored_change(decided_here, profile["_id"])
    named_entry = stored_change(carried, profile["_id"], "w3")
    older_entry = stored_change(older, profile["_id"], "w3")
    assert deciding_write(profile, fresh_entry, 5) == "w5"  # the write that holds it
    assert deciding_write(profile, named_entry, 3) == "w3"
    assert deciding_write(profile, older_entry, 3) == "w3"
    # Carried over by an older version, which named no write: unknown.
    assert deciding_write(profile, stored_change(carried, profile["_id"]), 3) is None
    for entry, change in ((named_entry, carried), (older_entry, older)):
        assert restored_change(profile, entry) == change
