"""Use cases of the sync service with in-memory fakes: Klaviyo pulls, CSV imports, unloads."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from audience_shared.commands import (
    ExportRequested,
    SyncRequested,
    default_schedule,
    effective_schedule,
    last_slot,
    next_refresh_at,
    sync_command_adapter,
)
from audience_shared.events import ListMembershipChanged, TraitsIdentified
from audience_sync.adapters.secrets import integration_cipher
from audience_sync.errors import JobFailed
from audience_sync.ports import SourceProfile
from audience_sync.scheduler import Scheduler
from audience_sync.services import (
    CsvImportService,
    ExportService,
    IdentityResolver,
    KlaviyoSyncService,
)
from tests.unit.sync.fakes import (
    FakeCommands,
    FakeCsv,
    FakeEvents,
    FakeIdentities,
    FakeJob,
    FakeMembers,
    FakeScheduleStore,
    FakeSource,
    FakeSyncStore,
    MemorySink,
    linked,
)

AUDIENCE = {
    "_id": "aud_1",
    "project_id": "prj_1",
    "kind": "synced",
    "archived": False,
    "sync_source": {"type": "klaviyo", "list_id": "L1"},
}


def profiles(*emails: str) -> list[SourceProfile]:
    return [SourceProfile(id=f"kp_{e}", email=e, first_name="Ann", last_name="Lee") for e in emails]


def sync_setup(
    source: FakeSource, known: list[dict[str, Any]] | None = None
) -> tuple[KlaviyoSyncService, FakeSyncStore, FakeEvents]:
    store = FakeSyncStore(audiences={"aud_1": dict(AUDIENCE)}, keys={"prj_1": b"token"})
    events = FakeEvents()
    service = KlaviyoSyncService(
        source, store, IdentityResolver(linked(known or [])), events, lambda t: "pk_key"
    )
    return service, store, events


def run_job(run_id: str = "run_1", mode: str = "full") -> FakeJob:
    return FakeJob(
        "sync", {"_id": run_id, "project_id": "prj_1", "audience_id": "aud_1", "mode": mode}
    )


def list_events(events: FakeEvents, member: bool) -> list[ListMembershipChanged]:
    return [
        e for e in events.published if isinstance(e, ListMembershipChanged) and e.member is member
    ]


async def test_sync__enters_every_member_and_identifies_them() -> None:
    service, _, events = sync_setup(FakeSource(profiles("a@x.io", "b@x.io", "c@x.io")))
    job = run_job()
    await service.run(job)
    assert len(list_events(events, True)) == 3
    identified = [e for e in events.published if isinstance(e, TraitsIdentified)]
    assert identified[0].traits == {
        "email": "a@x.io",
        "first_name": "Ann",
        "last_name": "Lee",
        "full_name": "Ann Lee",
    }
    assert job.record["pages"] == 2
    assert [c["next_url"] for c in job.checkpoints] == ["page:1", None]


async def test_sync__maps_by_external_id_then_email_then_phone() -> None:
    known = [
        {"user_id": "u_ext", "traits": {"external_id": "E1", "email": "other@x.io"}},
        {"user_id": "u_mail", "traits": {"email": "b@x.io"}},
        {"user_id": "u_phone", "traits": {"phone": "+15550001"}},
    ]
    source = FakeSource(
        [
            SourceProfile(id="k1", external_id="E1", email="b@x.io"),
            SourceProfile(id="k2", email="B@x.io"),
            SourceProfile(id="k3", phone="+1 555 0001"),
            SourceProfile(id="k4", email="new@x.io"),
        ]
    )
    service, _, events = sync_setup(source, known)
    await service.run(run_job())
    users = [e.user_id for e in list_events(events, True)]
    assert users[:3] == ["u_ext", "u_mail", "u_phone"]
    assert users[3].startswith("usr_")


async def test_sync__user_linked_by_the_evaluator__is_found_by_key__and_new_ones_linked() -> None:
    identities = FakeIdentities({"email:c@x.io": "u_mail"}, users={"u_mail"})
    store = FakeSyncStore(audiences={"aud_1": dict(AUDIENCE)}, keys={"prj_1": b"token"})
    events = FakeEvents()
    service = KlaviyoSyncService(
        FakeSource(profiles("a@x.io", "b@x.io", "c@x.io")),
        store,
        IdentityResolver(identities),
        events,
        lambda t: "pk_key",
    )
    await service.run(run_job())
    users = [e.user_id for e in list_events(events, True)]
    assert users[2] == "u_mail"
    assert (
        identities.links["email:a@x.io"] == users[0] != users[1] == identities.links["email:b@x.io"]
    )
    assert identities.links["source:klaviyo:kp_c@x.io"] == "u_mail"


async def test_sync__external_id_of_an_existing_user__names_that_user() -> None:
    known = [{"user_id": "E7", "traits": {}}, {"user_id": "u_mail", "traits": {"email": "e@x.io"}}]
    service, _, events = sync_setup(
        FakeSource([SourceProfile(id="k1", external_id="E7", email="e@x.io")]), known
    )
    await service.run(run_job())
    assert [e.user_id for e in list_events(events, True)] == ["E7"]


async def test_sync__second_run__publishes_nothing_for_unchanged_members() -> None:
    source = FakeSource(profiles("a@x.io", "b@x.io"))
    service, _, events = sync_setup(source)
    await service.run(run_job("run_1"))
    published = len(events.published)
    await service.run(run_job("run_2"))
    assert len(events.published) == published


async def test_sync__member_gone_from_the_list__exits_on_full_run() -> None:
    source = FakeSource(profiles("a@x.io", "b@x.io", "c@x.io"))
    service, _, events = sync_setup(source)
    await service.run(run_job("run_1"))
    source.profiles = source.profiles[1:]
    job = run_job("run_2")
    await service.run(job)
    exits = list_events(events, False)
    assert len(exits) == 1
    assert job.record["exited"] == 1
    entered_a = list_events(events, True)[0]
    assert exits[0].user_id == entered_a.user_id


async def test_sync__incremental_run__never_exits_anyone() -> None:
    source = FakeSource(profiles("a@x.io", "b@x.io"))
    service, _, events = sync_setup(source)
    await service.run(run_job("run_1"))
    source.profiles = source.profiles[:1]
    await service.run(run_job("run_2", mode="incremental"))
    assert list_events(events, False) == []


async def test_sync__crash_mid_pull__resumes_at_the_checkpoint_with_the_same_event_ids() -> None:
    source = FakeSource(profiles("a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"))
    source.fail_at = [1]
    service, _, events = sync_setup(source)
    job = run_job()
    with pytest.raises(ConnectionError):
        await service.run(job)
    first_ids = [e.event_id for e in events.published]
    await service.run(job)  # the worker re-runs it with the record's checkpoint
    assert source.fetched == [0, 1, 2]
    assert len(list_events(events, True)) == 5
    # The counters go on from the checkpointed pages: the resumed run reports every profile.
    assert (job.record["pages"], job.record["profiles"], job.record["entered"]) == (3, 5, 5)
    assert [e.event_id for e in events.published[: len(first_ids)]] == first_ids


async def test_sync__without_source_or_key__fails_with_a_code() -> None:
    service, store, _ = sync_setup(FakeSource([]))
    store.audiences["aud_1"]["sync_source"] = None
    with pytest.raises(JobFailed) as failed:
        await service.run(run_job())
    assert failed.value.code == "no_sync_source"
    store.audiences["aud_1"]["sync_source"] = {"type": "klaviyo", "list_id": "L1"}
    store.keys.clear()
    with pytest.raises(JobFailed) as failed:
        await service.run(run_job())
    assert failed.value.code == "klaviyo_not_connected"


def import_job() -> FakeJob:
    return FakeJob(
        "import",
        {"_id": "imp_1", "project_id": "prj_1", "audience_id": "aud_s", "file": "imp_1.csv"},
    )


CSV = (
    "user_id,email,phone,full_name,plan\n"
    "u1,a@x.io,+15550001,Ann Lee,gold\n"
    "u2,not-an-email,,Bob,silver\n"
    ",,,Nobody,\n"
    "u4,d@x.io\n"
    ",e@x.io,,Eve,gold\n"
    "\n"
    "u6,,,,\n"
)


async def test_import__bad_rows_are_reported_and_skipped() -> None:
    events = FakeEvents()
    service = CsvImportService(FakeCsv(CSV), IdentityResolver(FakeIdentities()), events, 2)
    job = import_job()
    await service.run(job)
    assert job.record["rows_total"] == 6
    assert job.record["rows_imported"] == 3
    assert job.record["rows_failed"] == 3
    assert [e["row"] for e in job.record["errors"]] == [3, 4, 5]
    assert "invalid email" in job.record["errors"][0]["message"]
    traits = [e.traits for e in events.published if isinstance(e, TraitsIdentified)]
    assert traits[0] == {
        "email": "a@x.io",
        "phone": "+15550001",
        "full_name": "Ann Lee",
        "metadata": {"plan": "gold"},
    }
    members = [e.user_id for e in list_events(events, True)]
    assert members[0] == "u1"
    assert members[2] == "u6"
    assert members[1].startswith("usr_")


async def test_import__same_file_twice__publishes_the_same_facts() -> None:
    first, second = FakeEvents(), FakeEvents()
    identities = IdentityResolver(FakeIdentities())
    await CsvImportService(FakeCsv(CSV), identities, first, 100).run(import_job())
    await CsvImportService(FakeCsv(CSV), identities, second, 100).run(import_job())
    assert [e.event_id for e in first.published] == [e.event_id for e in second.published]


async def test_import__rows_naming_their_user_id__are_those_users() -> None:
    identities = FakeIdentities({"email:a@x.io": "u9"}, users={"u9"})
    events = FakeEvents()
    service = CsvImportService(
        FakeCsv("user_id,email\nu1,a@x.io\nu2,b@x.io\n"), IdentityResolver(identities), events, 1
    )
    await service.run(import_job())
    assert {e.user_id for e in events.published} == {"u1", "u2"}


async def test_import__resumes_after_the_last_checkpointed_chunk() -> None:
    events = FakeEvents()
    service = CsvImportService(FakeCsv(CSV), IdentityResolver(FakeIdentities()), events, 2)
    job = import_job()
    job.record.update(
        {"checkpoint": {"rows_done": 4}, "rows_imported": 2, "rows_failed": 2, "rows_total": 6}
    )
    await service.run(job)
    # Rows 2-5 were done; only Eve's row and u6's remain.
    users = [e.user_id for e in list_events(events, True)]
    assert users[0].startswith("usr_")
    assert users[1] == "u6"
    assert job.record["rows_imported"] == 4


async def test_import__without_an_identifier_header__fails() -> None:
    service = CsvImportService(
        FakeCsv("a@x.io,Ann\n"), IdentityResolver(FakeIdentities()), FakeEvents(), 10
    )
    with pytest.raises(JobFailed) as failed:
        await service.run(import_job())
    assert failed.value.code == "header_required"


MEMBERS = [
    {
        "user_id": f"u{i}",
        "joined_at": datetime(2026, 1, i + 1, tzinfo=UTC),
        "traits": {"email": f"u{i}@x.io", "first_name": "A", "metadata": {"plan": "gold"}},
    }
    for i in range(5)
]


def export_job(fmt: str, columns: list[str] | None, include_traits: bool = False) -> FakeJob:
    return FakeJob(
        "export",
        {
            "_id": "exp_1",
            "audience_id": "aud_1",
            "format": fmt,
            "columns": columns,
            "include_traits": include_traits,
            "file": f"exp_1.{fmt}",
        },
    )


async def test_export__csv_with_a_column_projection() -> None:
    sink = MemorySink()
    service = ExportService(FakeMembers(MEMBERS), lambda: sink, page_rows=2)
    job = export_job("csv", ["user_id", "email", "metadata.plan", "full_name"])
    await service.run(job)
    lines = sink.data.decode().splitlines()
    assert lines[0] == "user_id,email,metadata.plan,full_name"
    assert lines[1] == "u0,u0@x.io,gold,A"
    assert len(lines) == 6
    assert job.record["rows_written"] == job.record["rows_total"] == 5
    assert sink.completed


async def test_export__jsonl_with_traits() -> None:
    sink = MemorySink()
    service = ExportService(FakeMembers(MEMBERS), lambda: sink, page_rows=2)
    await service.run(export_job("jsonl", ["user_id", "joined_at"], include_traits=True))
    rows = [json.loads(line) for line in sink.data.decode().splitlines()]
    assert rows[0] == {
        "user_id": "u0",
        "joined_at": "2026-01-01T00:00:00Z",
        "traits": {"email": "u0@x.io", "first_name": "A", "metadata": {"plan": "gold"}},
    }


async def test_export__resumed__truncates_to_the_checkpoint_and_writes_each_row_once() -> None:
    sink = MemorySink()
    service = ExportService(FakeMembers(MEMBERS), lambda: sink, page_rows=2)
    job = export_job("csv", ["user_id"])
    await service.run(job)
    whole = sink.data
    header_and_two = b"user_id\nu0\nu1\n"
    sink.data = header_and_two + b"u2\n"  # a page written but not checkpointed
    job.record.update({"checkpoint": {"after": "u1", "bytes": len(header_and_two)}})
    job.record["rows_written"] = 2
    await service.run(job)
    assert sink.data == whole


def test_schedules__daily_at_nine_weekly_on_saturday_evening() -> None:
    friday = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert next_refresh_at("daily", friday) == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert last_slot("daily", friday) == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert next_refresh_at("weekly", friday) == datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    saturday_night = datetime(2026, 11, 21, 19, 0, tzinfo=UTC)
    assert last_slot("weekly", saturday_night) == datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    assert next_refresh_at("manual", friday) is None
    assert default_schedule("intents") == "daily"
    assert default_schedule("dataset") == "weekly"
    assert effective_schedule("synced", "realtime") == "daily"


def synced(created: datetime) -> dict[str, Any]:
    return {**AUDIENCE, "refresh_schedule": "daily", "created_at": created, "rule_version": 1}


async def test_scheduler__two_processes__run_a_due_slot_once() -> None:
    store = FakeScheduleStore(audiences=[synced(datetime(2026, 11, 19, tzinfo=UTC))])
    commands = FakeCommands()
    now = datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC)
    one = Scheduler(store, commands, "one", 0, 60, lambda: now)
    two = Scheduler(store, commands, "two", 0, 60, lambda: now)
    ran = [await one.tick(), await two.tick(), await one.tick()]
    assert sum(ran) == 1
    assert len(store.runs) == 1
    (command,) = commands.commands
    assert isinstance(command, SyncRequested)
    assert (command.trigger, command.mode) == ("schedule", "full")
    assert store.next_refresh["aud_1"] == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


async def test_scheduler__slot_before_the_audience_existed__does_not_run() -> None:
    store = FakeScheduleStore(audiences=[synced(datetime(2026, 11, 20, 10, tzinfo=UTC))])
    scheduler = Scheduler(
        store, FakeCommands(), "one", 0, 60, lambda: datetime(2026, 11, 20, 12, tzinfo=UTC)
    )
    assert await scheduler.tick() == 0


async def test_scheduler__busy_audience__defers_the_slot_and_runs_it_later() -> None:
    store = FakeScheduleStore(audiences=[synced(datetime(2026, 11, 19, tzinfo=UTC))])
    store.locks["aud_1"] = "run_manual"
    now = datetime(2026, 11, 20, 9, 1, tzinfo=UTC)
    scheduler = Scheduler(store, FakeCommands(), "one", 0, 60, lambda: now)
    assert await scheduler.tick() == 0
    del store.locks["aud_1"]
    assert await scheduler.tick() == 1


async def test_scheduler__unload_audience__starts_an_export() -> None:
    audience = {
        "_id": "aud_u",
        "project_id": "prj_1",
        "kind": "dynamic",
        "mode": "unload",
        "columns": "email, phone",
        "refresh_schedule": "weekly",
        "created_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    store = FakeScheduleStore(audiences=[audience])
    commands = FakeCommands()
    now = datetime(2026, 11, 21, 18, 30, tzinfo=UTC)
    await Scheduler(store, commands, "one", 0, 60, lambda: now).tick()
    (export,) = store.exports.values()
    assert export["columns"] == ["email", "phone"]
    assert isinstance(commands.commands[0], ExportRequested)


async def test_scheduler__unload_audience__writes_its_first_file_once_built() -> None:
    audience = {
        "_id": "aud_u",
        "project_id": "prj_1",
        "kind": "dynamic",
        "mode": "unload",
        "unload_format": "jsonl",
        "columns": ["user_id", "email"],
        "refresh_schedule": "manual",
        "rule_version": 1,
        "created_at": datetime(2026, 11, 20, 12, tzinfo=UTC),
    }
    store = FakeScheduleStore(audiences=[audience])
    commands = FakeCommands()
    now = datetime(2026, 11, 20, 12, 1, tzinfo=UTC)
    one = Scheduler(store, commands, "one", 0, 60, lambda: now)
    two = Scheduler(store, commands, "two", 0, 60, lambda: now)
    assert await one.tick() == 0  # still building: nothing to write yet
    store.ready.add("aud_u|v1")
    assert [await one.tick(), await two.tick(), await one.tick()] == [1, 0, 0]
    (export,) = store.exports.values()
    assert (export["format"], export["columns"], export["trigger"]) == (
        "jsonl",
        ["user_id", "email"],
        "create",
    )
    assert export["file"].endswith(".jsonl")
    audience["rule_version"] = 2
    store.ready.add("aud_u|v2")
    assert await one.tick() == 1  # a new rule, built: a fresh file


def test_commands__round_trip_through_the_adapter() -> None:
    command = SyncRequested(project_id="p", audience_id="a", run_id="run_1")
    parsed = sync_command_adapter.validate_json(command.model_dump_json())
    assert parsed == command
    assert command.key == b"a"


def test_cipher__api_encrypts__sync_decrypts() -> None:
    from audience_api.adapters.sync_store import FernetKeyCipher

    token = FernetKeyCipher("s3cret").encrypt("pk_live_abcd")
    assert integration_cipher("s3cret").decrypt(token).decode() == "pk_live_abcd"
