"""The evaluator's store adapters against the real store: cached profiles and shared counters."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure

from audience_evaluator.adapters import mongo as store_module
from audience_evaluator.adapters.mongo import (
    MongoMembershipStore,
    MongoProfileStore,
    change_token,
    token_slot,
)
from audience_evaluator.errors import LateCount
from audience_evaluator.ports import Provenance
from audience_shared.events import MembershipChanged
from audience_shared.profile import join_time, join_times
from audience_shared.store import CONCURRENT_COMMANDS, GUARDED_REPLACE_CHUNK

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
async def db_name(client: AsyncMongoClient[dict[str, Any]]) -> AsyncIterator[str]:
    name = f"evaluator_store_{secrets.token_hex(4)}"
    yield name
    await client.drop_database(name)


@pytest.mark.parametrize("decoded", [0, 10], ids=["bson", "decoded"])
async def test_cached_profile__moved_on_by_another_process__conflicts_then_reads_the_store(
    client: AsyncMongoClient[dict[str, Any]], db_name: str, decoded: int
) -> None:
    mine, other = (
        MongoProfileStore(client[db_name], cache_size=10, decoded_cache_size=decoded)
        for _ in range(2)
    )
    assert await mine.commit_profiles([({"_id": "p/u", "version": 1, "n": 1}, 0)]) == set()
    cached = (await mine.load_profiles(["p/u"]))["p/u"]  # from this process's cache
    fresh = (await other.load_profiles(["p/u"]))["p/u"]
    assert await other.commit_profiles([({**fresh, "version": 2, "n": 2}, 1)]) == set()
    # The stale copy's write is refused, and the retry's read sees the other's write.
    assert await mine.commit_profiles([({**cached, "version": 2, "n": 9}, 1)]) == {"p/u"}
    assert (await mine.load_profiles(["p/u"]))["p/u"]["n"] == 2


async def test_profile_fields_only_the_evaluator_reads__stored_packed__read_back_whole(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    at = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    own = {
        "seen": ["e1", "e2"],
        "tracked": [{"e": "purchase", "at": at, "p": '{"amount": 5}'}],
        "trait_times": {"plan": at},
        "due": {"aud": at + timedelta(days=7)},
        "counted": ["e1"],
        "list_times": {},
    }
    profile = {"_id": "p/u", "project_id": "p", "user_id": "u", "version": 1, "traits": {}, **own}
    assert await MongoProfileStore(client[db_name]).commit_profiles([(dict(profile), 0)]) == set()
    stored = await client[db_name].profiles.find_one({"_id": "p/u"})
    assert stored is not None
    assert not set(own) & set(stored)
    assert stored["traits"] == {}
    assert "packed" in stored
    # Read by another process (nothing cached): the profile as it was written.
    read = (await MongoProfileStore(client[db_name]).load_profiles(["p/u"]))["p/u"]
    assert {name: read[name] for name in own} == own
    assert "packed" not in read


async def test_profile_stored_before_packing__read_as_is__packed_by_its_next_write(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    at = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    older = {"_id": "p/u", "project_id": "p", "user_id": "u", "version": 3, "seen": ["e1"]}
    await client[db_name].profiles.insert_one({**older, "due": {"aud": at}})
    store = MongoProfileStore(client[db_name])
    read = (await store.load_profiles(["p/u"]))["p/u"]
    assert read["seen"] == ["e1"]
    assert read["due"] == {"aud": at}
    read["seen"].append("e2")
    assert await store.commit_profiles([({**read, "version": 4}, 3)]) == set()
    stored = await client[db_name].profiles.find_one({"_id": "p/u"})
    assert stored is not None
    assert "seen" not in stored
    assert "due" not in stored
    again = (await MongoProfileStore(client[db_name]).load_profiles(["p/u"]))["p/u"]
    assert again["seen"] == ["e1", "e2"]
    assert again["due"] == {"aud": at}


async def test_join_times__stored_as_a_list_beside_audiences__read_back_as_a_map(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    at = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    joined = {"aud_b": at, "aud_a": at + timedelta(hours=1)}
    profile = {"_id": "p/u", "version": 1, "audiences": ["aud_a", "aud_b", "aud_c"]}
    store = MongoProfileStore(client[db_name])
    assert await store.commit_profiles([({**profile, "joined": joined}, 0)]) == set()
    stored = await client[db_name].profiles.find_one({"_id": "p/u"})
    assert stored is not None
    assert "joined" not in stored
    assert stored["joined_at"] == [at + timedelta(hours=1), at, None]  # aud_c's is unknown
    assert join_time(stored, "aud_b") == at
    read = (await MongoProfileStore(client[db_name]).load_profiles(["p/u"]))["p/u"]
    assert read["joined"] == joined
    assert "joined_at" not in read


async def test_join_times__a_map_an_older_version_wrote__read__rewritten_as_a_list(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    at = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    older = {"_id": "p/u", "version": 3, "audiences": ["aud_a"], "joined": {"aud_a": at}}
    await client[db_name].profiles.insert_one(older)
    assert join_time(older, "aud_a") == at
    store = MongoProfileStore(client[db_name])
    read = (await store.load_profiles(["p/u"]))["p/u"]
    assert read["joined"] == {"aud_a": at}
    assert await store.commit_profiles([({**read, "version": 4}, 3)]) == set()
    stored = await client[db_name].profiles.find_one({"_id": "p/u"})
    assert stored is not None
    assert (stored["joined_at"], "joined" in stored) == ([at], False)


async def test_join_times__an_older_version_wrote_over_a_list__its_map_wins(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    at = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    # An older version removed aud_a, added aud_c, and kept the list it did not know as it was.
    rewritten = {
        "_id": "p/u",
        "version": 5,
        "audiences": ["aud_b", "aud_c"],
        "joined": {"aud_c": at + timedelta(days=1)},
        "joined_at": [at, at + timedelta(hours=1)],
    }
    await client[db_name].profiles.insert_one(rewritten)
    assert join_times(rewritten) == {"aud_c": at + timedelta(days=1)}
    read = (await MongoProfileStore(client[db_name]).load_profiles(["p/u"]))["p/u"]
    assert read["joined"] == {"aud_c": at + timedelta(days=1)}


async def test_identity_links__first_user_keeps_a_key__a_key_seen_stored_is_not_asked_again(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    links = client[db_name].identity_links
    mine, other = MongoProfileStore(client[db_name]), MongoProfileStore(client[db_name])
    await other.save_identity_links([{"_id": "p|email:a", "project_id": "p", "user_id": "first"}])
    await mine.save_identity_links(
        [
            {"_id": "p|email:a", "project_id": "p", "user_id": "second"},
            {"_id": "p|email:b", "project_id": "p", "user_id": "second"},
        ]
    )
    stored = {doc["_id"]: doc["user_id"] async for doc in links.find({})}
    assert stored == {"p|email:a": "first", "p|email:b": "second"}
    # Removed behind this process's back (links never are): it does not look again, which
    # shows the keys it saw stored are remembered, while a new process would restore it.
    await links.delete_one({"_id": "p|email:b"})
    again = [{"_id": "p|email:b", "project_id": "p", "user_id": "second"}]
    await mine.save_identity_links(again)
    assert await links.count_documents({"_id": "p|email:b"}) == 0
    await MongoProfileStore(client[db_name]).save_identity_links(again)
    assert await links.count_documents({"_id": "p|email:b"}) == 1


def change(user: str, kind: str = "membership.entered") -> MembershipChanged:
    return MembershipChanged.model_validate(
        {"type": kind, "project_id": "p", "audience_id": "aud", "user_id": user, "version": 1}
    )


async def test_counters__two_processes_at_once_and_a_replay__each_change_counts_once(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    stores = [MongoMembershipStore(client[db_name]) for _ in range(2)]
    batches = [[change(f"u{n}-{i}") for i in range(20)] for n in range(10)]
    # Ten batches from two processes racing on one counter, each batch delivered twice.
    await asyncio.gather(
        *(stores[n % 2].count_changes(batch) for n, batch in enumerate(batches)),
        *(stores[(n + 1) % 2].count_changes(batch) for n, batch in enumerate(batches)),
    )
    await stores[0].count_changes([change("u0-0", "membership.exited")])
    assert await stores[1].member_count("aud") == 199
    counter = await client[db_name].audience_counts.find_one({"_id": "aud"})
    assert counter is not None
    assert (counter["entered_total"], counter["exited_total"]) == (200, 1)


async def test_counters__processes_in_slots_of_their_own__no_race__readers_add_them_up(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    stores = [MongoMembershipStore(client[db_name]) for _ in range(2)]
    batches = [[change(f"u{n}-{i}") for i in range(20)] for n in range(10)]
    # Process n % 2 counts in slot n % 2 (its writes' tokens name it); each batch twice.
    written = [
        Provenance(decided={c.event_id: f"w{n}.{n % 2}" for c in b}) for n, b in enumerate(batches)
    ]
    for _ in range(2):
        await asyncio.gather(
            *(stores[n % 2].count_changes(b, written[n]) for n, b in enumerate(batches))
        )
    # A third process carried one change over from slot 1's outbox: counted there, once.
    await MongoMembershipStore(client[db_name]).count_changes(
        [batches[1][0]], Provenance(carried={batches[1][0].event_id: "w1.1"})
    )
    counters = {d["_id"]: d async for d in client[db_name].audience_counts.find()}
    assert sorted(counters) == ["aud", "aud|0", "aud|1"]
    assert counters["aud"]["member_count"] == 0  # created for the readers, never counted in
    # Each process's five batches each landed at the first try: nobody raced it.
    assert [counters[f"aud|{slot}"]["count_version"] for slot in (0, 1)] == [5, 5]
    assert [counters[f"aud|{slot}"]["member_count"] for slot in (0, 1)] == [100, 100]
    assert await stores[0].member_count("aud") == 200


async def test_counters__first_slot_of_an_audience_counted_by_an_older_version__base_made_first(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    """An audience whose counts a much older version kept in `audience_state`: the base document
    takes them before any slot exists, even when the slot's creation then fails."""
    db = client[db_name]
    await db.audience_state.insert_one({"_id": "aud", "member_count": 5, "entered_total": 5})
    store = MongoMembershipStore(db)
    inserts = db.audience_counts.insert_one
    created: list[str] = []

    async def second_insert_fails(doc: dict[str, Any]) -> Any:
        if created:
            raise ConnectionFailure("the store went away")
        created.append(doc["_id"])
        return await inserts(doc)

    entered = change("u1")
    written = Provenance(decided={entered.event_id: "w1.2"})
    store._counts = SimpleNamespace(  # type: ignore[assignment]
        insert_one=second_insert_fails, find=db.audience_counts.find
    )
    with pytest.raises(ConnectionFailure):
        await store.count_changes([entered], written)
    store._counts = db.audience_counts
    await store.count_changes([entered], written)  # the batch again
    assert created == ["aud"]
    assert await store.member_count("aud") == 6


async def test_commit_profiles__tokens_name_the_slot_of_the_first_partition_held(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    store = MongoProfileStore(client[db_name])
    await store.commit_profiles([({"_id": "p/a", "version": 1}, 0)])
    store.count_in_slot_of({5, 3})
    await store.commit_profiles([({"_id": "p/b", "version": 1}, 0)])
    store.count_in_slot_of(set())  # every partition revoked: the base again
    await store.commit_profiles([({"_id": "p/c", "version": 1}, 0)])
    stored = {d["_id"]: d["written_by"] async for d in client[db_name].profiles.find()}
    assert [token_slot(stored[pid]) for pid in ("p/a", "p/b", "p/c")] == [None, 3, None]


async def test_counters__settled_changes__forgotten_at_the_next_write(
    client: AsyncMongoClient[dict[str, Any]], db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SETTLE_GRACE_S", 0.0)
    store = MongoMembershipStore(client[db_name])
    first, second = [change("u1"), change("u2")], [change("u3")]
    await store.count_changes(first)
    await store.count_changes(first)  # a replay before the mark: recognised
    assert await tokens(client, db_name) == {change_token(c.event_id) for c in first}
    store.settle(first)
    await store.count_changes(second)
    assert await tokens(client, db_name) == {change_token(second[0].event_id)}
    assert await store.member_count("aud") == 3


async def test_counters__settled_changes__kept_through_the_grace(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    store = MongoMembershipStore(client[db_name])
    first = [change("u1")]
    await store.count_changes(first)
    store.settle(first)
    await store.count_changes([change("u2")])
    # Within SETTLE_GRACE_S, a process that has not seen the mark may still count it.
    assert change_token(first[0].event_id) in await tokens(client, db_name)
    await store.count_changes(first)
    assert await store.member_count("aud") == 2


async def test_counters__write_past_its_deadline__refused_and_nothing_counted(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    store = MongoMembershipStore(client[db_name])
    with pytest.raises(LateCount):
        await store.count_changes([change("u1")], issue_by=time.monotonic() - 0.1)
    assert await store.member_count("aud") == 0


async def test_commit_profiles__new_profiles_written_before_replaces__a_failure_stops_the_rest(
    client: AsyncMongoClient[dict[str, Any]], db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MongoProfileStore(client[db_name])
    replaced = 2 * GUARDED_REPLACE_CHUNK + 10  # three commands
    existing = [({"_id": f"p/old{n}", "version": 1}, 0) for n in range(replaced)]
    assert await store.commit_profiles(existing) == set()
    commit_chunk = store._commit_chunk
    calls: list[tuple[str, str]] = []
    replace_sizes: list[int] = []

    async def traced(writes: Any, token: str) -> set[str]:
        kind = "insert" if writes[0][1] == 0 else "replace"
        calls.append(("start", kind))
        if kind == "replace":
            replace_sizes.append(len(writes))
        conflicts = await commit_chunk(writes, token)
        calls.append(("done", kind))
        return conflicts

    monkeypatch.setattr(store, "_commit_chunk", traced)
    # A merge: its target is new (an insert), its source a replace saying where it went.
    writes = [({"_id": "p/new", "version": 1}, 0)] + [
        ({"_id": f"p/old{n}", "version": 2, "merged_into": "p/new"}, 1) for n in range(replaced)
    ]
    assert await store.commit_profiles(writes) == set()
    assert calls[:2] == [("start", "insert"), ("done", "insert")]
    assert {kind for _, kind in calls[2:]} == {"replace"}
    assert len(calls) == 2 + 2 * 3  # the replaces in three commands
    assert sorted(replace_sizes) == [10, GUARDED_REPLACE_CHUNK, GUARDED_REPLACE_CHUNK]
    stored = {d["_id"]: d async for d in client[db_name].profiles.find({"version": 2})}
    assert len(stored) == replaced  # every guarded replace of a full command landed
    # A failed command fails the write at once, as itself: the commands in flight are cancelled
    # and most of those not sent yet never go (one may take the failed command's place first).
    calls.clear()
    never = asyncio.Event()

    async def failing(writes: Any, token: str) -> set[str]:
        calls.append(("start", "replace"))
        if len(calls) == 1:
            raise ConnectionFailure("store gone")
        try:
            await never.wait()
        except asyncio.CancelledError:
            calls.append(("cancelled", "replace"))
            raise
        return set()

    monkeypatch.setattr(store, "_commit_chunk", failing)
    commands = CONCURRENT_COMMANDS + 4
    many = [({"_id": f"p/old{n}", "version": 3}, 2) for n in range(replaced)]
    many = (many * commands)[: commands * GUARDED_REPLACE_CHUNK]
    with pytest.raises(ConnectionFailure):
        await store.commit_profiles(many)
    started = [call for call in calls if call[0] == "start"]
    assert len(started) <= CONCURRENT_COMMANDS + 1 < commands
    assert len(calls) - len(started) == len(started) - 1  # every other one was cancelled


async def test_clear_outboxes__a_profile_written_since__keeps_its_outbox_and_is_not_reported(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    db = client[db_name]
    store = MongoProfileStore(db)
    await db.profiles.insert_many(
        [
            {
                "_id": "p/a",
                "version": 2,
                "outbox": ["+1|1|time||aud_x"],
                "carried_from": ["1|tok-1"],
            },
            # Written again since its outbox (version 2) was delivered, carrying it on.
            {"_id": "p/b", "version": 3, "outbox": ["+1|2|time||aud_x"]},
        ]
    )
    cleared = await store.clear_outboxes([("p/a", 2, None), ("p/b", 2, None)])
    assert cleared == {("p/a", 2)}
    a = await db.profiles.find_one({"_id": "p/a"})
    assert a is not None
    assert (a["outbox"], a["version"], "carried_from" in a) == ([], 3, False)
    b = await db.profiles.find_one({"_id": "p/b"})
    assert b is not None
    assert (bool(b["outbox"]), b["version"]) == (True, 3)


async def test_markers__a_write_marks_all_its_outboxes__older_per_outbox_markers_still_read(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    db = client[db_name]
    store = MongoProfileStore(db)
    writes: list[tuple[dict[str, Any], int]] = [
        ({"_id": f"p/{n}", "outbox": [f"+1|1|event||aud_{n}"]}, 0) for n in range(3)
    ]
    assert await store.commit_profiles(writes) == set()
    token = writes[0][0]["written_by"]
    outboxes = [(f"p/{n}", 1, token) for n in range(3)]
    assert await store.marked_writes(outboxes) == set()
    await store.mark_delivered({token})
    await store.mark_delivered({token})  # a retried batch marks again: no error
    assert await db.delivered_outboxes.count_documents({}) == 1
    assert await store.marked_writes(outboxes) == {(f"p/{n}", 1) for n in range(3)}
    assert await store.marked_writes([("p/0", 2, "another")]) == set()
    # An outbox an older version delivered has a marker of its own, found with or without a token.
    await db.delivered_outboxes.insert_one({"_id": "p/old|7"})
    assert await store.marked_writes(
        [("p/old", 7, None), ("p/old", 8, None), ("p/old", 7, "unmarked")]
    ) == {("p/old", 7)}
    now = await store.outboxes_now(["p/0", "p/none"])
    assert set(now) == {"p/0"}
    assert (now["p/0"]["written_by"], now["p/0"]["outbox"]) == (token, ["+1|1|event||aud_0"])


async def test_markers__dropped_once_old_and_named_by_no_outbox(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    db = client[db_name]
    store = MongoProfileStore(db)
    old = datetime.now(UTC) - timedelta(hours=2)
    await db.profiles.insert_many(
        [
            # The outbox of a write that carried it on from two earlier writes.
            {
                "_id": "p/a",
                "version": 3,
                "outbox": ["+1|1|event||aud"],
                "written_by": "tok-a3",
                "carried_from": ["1|tok-a1", "2|tok-a2"],
            },
            # An outbox an older version carried on from version 4 (naming no writes): the
            # markers it made for versions 4 and 5 may still be asked for.
            {"_id": "p/b", "version": 5, "outbox": ["+1|4|event||aud"], "written_by": "x"},
            # No outbox: names nothing.
            {"_id": "p/c", "version": 9, "outbox": [], "written_by": "tok-c"},
        ]
    )
    named = ["tok-a1", "tok-a2", "tok-a3", "p/b|4", "p/b|5"]
    unnamed_old = ["tok-c", "tok-gone", "p/b|3"]
    await db.delivered_outboxes.insert_many(
        [{"_id": key, "at": old} for key in ("tok-a1", "tok-a2", "tok-a3", "tok-c", "tok-gone")]
        + [{"_id": key} for key in ("p/b|3", "p/b|4", "p/b|5")]  # older versions': no time
        + [{"_id": "tok-new", "at": datetime.now(UTC)}]  # a batch may still be checking it
    )
    assert await store.drop_unreferenced_markers(timedelta(hours=1)) == len(unnamed_old)
    left = {doc["_id"] async for doc in db.delivered_outboxes.find()}
    assert left == {*named, "tok-new"}
    assert await store.drop_unreferenced_markers(timedelta(hours=1)) == 0


async def test_counters__written_before_settling__old_tokens_kept_aside_for_a_while(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    old = change("u1")
    await older_counter(client, db_name, change_token(old.event_id))
    await MongoMembershipStore(client[db_name]).count_changes([old, change("u2")])
    counter = await client[db_name].audience_counts.find_one({"_id": "aud"})
    assert counter is not None
    assert counter["member_count"] == 2  # the replay of what an older process counted: not
    assert counter["applied_before"] == change_token(old.event_id)
    # Once their time is up, the old tokens go with the next write.
    await client[db_name].audience_counts.update_one(
        {"_id": "aud"}, {"$set": {"applied_before_until": 0.0}}
    )
    await MongoMembershipStore(client[db_name]).count_changes([change("u3")])
    counter = await client[db_name].audience_counts.find_one({"_id": "aud"})
    assert counter is not None
    assert "applied_before" not in counter
    assert counter["member_count"] == 3


async def test_counters__changes_of_one_write__recorded_by_its_token_once(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    store = MongoMembershipStore(client[db_name])
    batch = [change(f"u{n}") for n in range(50)]
    written = Provenance(decided={c.event_id: "w1" for c in batch})
    await store.count_changes(batch, written)
    await store.count_changes(batch, written)  # the same delivery again (a retry): recognised
    assert await tokens(client, db_name) == {"@w1"}
    assert await store.member_count("aud") == 50


@pytest.mark.parametrize("first", ["decider", "carrier"])
async def test_counters__carried_change__counted_once_whichever_delivery_lands_first(
    client: AsyncMongoClient[dict[str, Any]], db_name: str, first: str
) -> None:
    """A process decided `taken` in write w1 and is slow to deliver it; another process carried
    it over in its write w2, with a change of its own."""
    taken, own = change("u1"), change("u2")
    decider, carrier = (MongoMembershipStore(client[db_name]) for _ in range(2))
    deliveries = [
        (decider, [taken], Provenance(decided={taken.event_id: "w1"})),
        (
            carrier,
            [taken, own],
            Provenance(decided={own.event_id: "w2"}, carried={taken.event_id: "w1"}),
        ),
    ]
    for store, changes, provenance in deliveries if first == "decider" else deliveries[::-1]:
        await store.count_changes(changes, provenance)
    assert await decider.member_count("aud") == 2
    # A third process carried `taken` on from the carrier's outbox, which named w1.
    await decider.count_changes([taken], Provenance(carried={taken.event_id: "w1"}))
    assert await decider.member_count("aud") == 2


async def test_counters__tokens_of_an_older_version__kept_aside_and_recognised(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    old = change("u1")
    # Settling, one token per change.
    await older_counter(client, db_name, change_token(old.event_id), settling=True)
    store = MongoMembershipStore(client[db_name])
    # Carried over by this version from an outbox an older one counted (writer unknown).
    await store.count_changes([old, change("u2")], Provenance(carried={old.event_id: None}))
    counter = await client[db_name].audience_counts.find_one({"_id": "aud"})
    assert counter is not None
    assert counter["member_count"] == 2
    assert counter["applied_before"] == change_token(old.event_id)
    assert counter["format"] == 2


async def older_counter(
    client: AsyncMongoClient[dict[str, Any]], db_name: str, applied: str, **fields: Any
) -> None:
    """A counter of one member as an older version left it."""
    await client[db_name].audience_counts.insert_one(
        {
            "_id": "aud",
            "member_count": 1,
            "entered_total": 1,
            "exited_total": 0,
            "applied": applied,
            "count_version": 4,
            **fields,
        }
    )


async def tokens(client: AsyncMongoClient[dict[str, Any]], db_name: str) -> set[str]:
    counter = await client[db_name].audience_counts.find_one({"_id": "aud"})
    assert counter is not None
    return set(counter["applied"].split())


async def test_reconcile__counts_from_profiles__an_audience_with_a_change_in_flight_waits(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    db = client[db_name]
    store = MongoMembershipStore(db)
    await db.profiles.insert_many(
        [
            {"_id": "p/a", "version": 3, "audiences": ["aud_x", "aud_y"], "outbox": []},
            {"_id": "p/b", "version": 1, "audiences": ["aud_x"], "outbox": []},
            # Written, its entry into aud_y not delivered yet (no marker): in flight.
            {
                "_id": "p/c",
                "version": 2,
                "audiences": ["aud_y"],
                "outbox": ["+1|2|event||aud_y"],
            },
            # Written and delivered (its write's marker is there): settled.
            {
                "_id": "p/d",
                "version": 5,
                "audiences": ["aud_z"],
                "outbox": ["+1|5|event||aud_z"],
                "written_by": "tok-d",
            },
            # Delivered by an older version, which marked the outbox itself: settled.
            {
                "_id": "p/e",
                "version": 4,
                "audiences": ["aud_w"],
                "outbox": ["+1|4|event||aud_w"],
                "written_by": "tok-e",
            },
        ]
    )
    await db.delivered_outboxes.insert_many([{"_id": "tok-d"}, {"_id": "p/e|4"}])
    await db.audience_counts.insert_many(
        [
            {"_id": aid, "member_count": 7, "applied": "", "count_version": 1}
            for aid in ("aud_x", "aud_y", "aud_z", "aud_w", "aud_gone")
        ]
    )
    await store.reconcile_counts(["aud_x", "aud_y", "aud_z", "aud_w", "aud_gone"])
    counts = {d["_id"]: d["member_count"] async for d in db.audience_counts.find()}
    assert counts == {"aud_x": 2, "aud_y": 7, "aud_z": 1, "aud_w": 1, "aud_gone": 0}
    assert sorted(await store.member_profile_ids("aud_x")) == ["p/a", "p/b"]


async def test_reconcile__counts_in_slots__the_base_takes_the_difference(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    db = client[db_name]
    await db.profiles.insert_many(
        [{"_id": f"p/{n}", "version": 1, "audiences": ["aud"], "outbox": []} for n in range(3)]
    )
    await db.audience_counts.insert_many(
        [
            {"_id": "aud|0", "member_count": 4, "applied": "", "count_version": 3},
            {"_id": "aud|2", "member_count": 1, "applied": "", "count_version": 1},
            {"_id": "new|1", "member_count": 1, "applied": "", "count_version": 1},
        ]
    )
    store = MongoMembershipStore(db)
    # The first pass creates the missing base documents; the next repairs through them.
    for _ in range(2):
        await store.reconcile_counts(["aud", "new"])
    counts = {d["_id"]: d["member_count"] async for d in db.audience_counts.find()}
    assert counts == {"aud": -2, "aud|0": 4, "aud|2": 1, "new": -1, "new|1": 1}
    assert (await store.member_count("aud"), await store.member_count("new")) == (3, 0)


async def test_adopt_membership_documents__join_times_move_into_profiles__collection_dropped(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> None:
    db = client[db_name]
    store = MongoMembershipStore(db)
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await db.profiles.insert_many(
        [
            {"_id": "p/a", "version": 4, "audiences": ["aud_x", "aud_y"]},
            {"_id": "p/b", "version": 2, "audiences": ["aud_x"], "joined": {"aud_x": at}},
            {"_id": "p/c", "version": 5, "audiences": ["aud_x"], "joined_at": [at]},
        ]
    )
    await db.memberships.insert_many(
        [
            {"_id": f"{aid}|{pid}", "audience_id": aid, "profile_id": pid, "joined_at": when}
            for aid, pid, when in (
                ("aud_x", "p/a", at),
                ("aud_y", "p/a", at + timedelta(hours=1)),
                ("aud_x", "p/b", at - timedelta(days=1)),
                ("aud_x", "p/c", at - timedelta(days=2)),
            )
        ]
    )
    assert await store.adopt_membership_documents() == 3
    a, b, c = [await db.profiles.find_one({"_id": pid}) for pid in ("p/a", "p/b", "p/c")]
    assert a is not None
    assert b is not None
    assert c is not None
    assert a["joined"] == {"aud_x": at, "aud_y": at + timedelta(hours=1)}
    assert a["version"] == 4  # not a new version: outbox markers are keyed by it
    assert b["joined"] == {"aud_x": at}  # written by this version already: kept
    assert (c["joined_at"], "joined" in c) == ([at], False)  # as a list, by a later version
    assert "memberships" not in await db.list_collection_names()
    assert await store.adopt_membership_documents() == 0
