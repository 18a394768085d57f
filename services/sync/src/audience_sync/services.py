"""Use cases of the sync service: Klaviyo pulls, CSV imports, unloads. No driver imports."""

import csv
import hashlib
import io
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from audience_shared.events import ListMembershipChanged, TraitsIdentified, UserEventBase
from audience_shared.identity import identity_keys, normalize_phone
from audience_sync.errors import JobFailed
from audience_sync.metrics import MEMBERSHIP_EVENTS, ROWS_EXPORTED, ROWS_FAILED, ROWS_IMPORTED
from audience_sync.ports import (
    CsvSource,
    Document,
    ExportSink,
    IdentityStore,
    JobHandle,
    ListSource,
    MemberSource,
    SourceProfile,
    SyncStore,
    UserEventPublisher,
)

KNOWN_COLUMNS = ("user_id", "external_id", "email", "phone", "full_name")
IDENTIFIER_COLUMNS = ("user_id", "external_id", "email", "phone")
MAX_REPORTED_ERRORS = 100
MAX_ID_LENGTH = 200
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def deterministic_id(*parts: str) -> str:
    """An event id that is the same every time the same fact is published (dedupe on replay)."""
    return "evt_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def metadata_key(name: str) -> str:
    """A metadata key the store accepts as a field name (no dots, no leading $)."""
    return name.strip().replace(".", "_").lstrip("$") or "_"


@dataclass(frozen=True)
class Identity:
    """What a source knows about a person, in the order we trust it."""

    user_id: str | None = None
    source_key: str | None = None
    external_id: str | None = None
    email: str | None = None
    phone: str | None = None

    def lookup_keys(self) -> list[str]:
        """Identity keys in priority order: source record, external_id, email, phone."""
        source = [f"source:{self.source_key}"] if self.source_key else []
        return source + identity_keys(self.external_id, self.email, self.phone)


class IdentityResolver:
    """Maps records to user ids: external_id, then email, then phone; else a new user.

    Every lookup pins `_id`: identity keys are links (`<project>|email:a@b.c` -> user id). The
    sync links every user it maps or creates; the evaluator links every user whose identify
    sets external_id, email or phone (so users that reached Audiences another way are found
    without reading profiles). New users get a deterministic id (the external_id itself, or a
    hash of the first identifier), so importing the same data twice, or resuming an import,
    names the same user.
    """

    def __init__(self, store: IdentityStore) -> None:
        self._store = store

    async def resolve(self, project_id: str, identities: Sequence[Identity]) -> list[str]:
        pending = [i for i in identities if i.user_id is None]
        keys = sorted({key for identity in pending for key in identity.lookup_keys()})
        linked = await self._store.find_links(project_id, keys) if keys else {}
        # An external_id that is already a user's id names that user.
        external = sorted({i.external_id for i in pending if i.external_id} - set(linked))
        for user_id in await self._store.existing_users(project_id, external) if external else []:
            linked[f"external_id:{user_id}"] = user_id
        resolved: list[str] = []
        new_links: dict[str, str] = {}
        for identity in identities:
            if identity.user_id is not None:
                resolved.append(identity.user_id)
                continue
            user_id = self._pick(identity, linked)
            resolved.append(user_id)
            for key in identity.lookup_keys():
                if key not in linked:
                    new_links.setdefault(key, user_id)
                    # Later records of this batch with the same key name the same user.
                    linked[key] = user_id
        if new_links:
            await self._store.save_links(project_id, new_links)
        return resolved

    async def known(self, project_id: str, identities: Sequence[Identity]) -> list[str | None]:
        """Like `resolve`, but only users Audiences already knows: None where no link (and no
        user of that external_id) exists, and nothing is created or linked."""
        keys = sorted({key for i in identities if i.user_id is None for key in i.lookup_keys()})
        linked = await self._store.find_links(project_id, keys) if keys else {}
        external = sorted(
            {i.external_id for i in identities if i.user_id is None and i.external_id}
            - {key.removeprefix("external_id:") for key in linked}
        )
        for user_id in await self._store.existing_users(project_id, external) if external else []:
            linked[f"external_id:{user_id}"] = user_id
        found: list[str | None] = []
        for identity in identities:
            if identity.user_id is not None:
                found.append(identity.user_id)
                continue
            found.append(next((linked[k] for k in identity.lookup_keys() if k in linked), None))
        return found

    @staticmethod
    def _pick(identity: Identity, linked: dict[str, str]) -> str:
        for key in identity.lookup_keys():
            if key in linked:
                return linked[key]
        if identity.external_id:
            return identity.external_id[:MAX_ID_LENGTH]
        first = identity.lookup_keys()[0]
        return "usr_" + hashlib.sha256(first.encode()).hexdigest()[:24]


def klaviyo_traits(profile: SourceProfile) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    for name, value in (
        ("email", profile.email),
        ("phone", profile.phone),
        ("first_name", profile.first_name),
        ("last_name", profile.last_name),
        ("external_id", profile.external_id),
    ):
        if value is not None:
            traits[name] = value
    full = " ".join(part for part in (profile.first_name, profile.last_name) if part)
    if full:
        traits["full_name"] = full
    if profile.properties:
        traits["metadata"] = {metadata_key(k): v for k, v in profile.properties.items()}
    return traits


def traits_digest(traits: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(traits, sort_keys=True, default=str).encode()).hexdigest()[:24]


class KlaviyoSyncService:
    """Pulls a Klaviyo list page by page into list events, checkpointing after every page.

    Members are entered as pages arrive; a full run then exits every member it did not see
    (Klaviyo never reports removals). Events are published before the store records them, and
    their ids depend only on the run, so a resumed page republishes the same, deduplicated ids.
    """

    def __init__(
        self,
        source: ListSource,
        store: SyncStore,
        identities: IdentityResolver,
        events: UserEventPublisher,
        decrypt: Callable[[bytes], str],
        reconcile_batch: int = 500,
    ) -> None:
        self._source = source
        self._store = store
        self._identities = identities
        self._events = events
        self._decrypt = decrypt
        self._reconcile_batch = reconcile_batch

    async def run(self, job: JobHandle) -> None:
        run = job.record
        audience = await self._store.audience(run["audience_id"])
        if audience is None or audience.get("archived"):
            raise JobFailed("audience_not_found", "The audience no longer exists")
        sync_source = audience.get("sync_source") or {}
        if sync_source.get("type") != "klaviyo" or not sync_source.get("list_id"):
            raise JobFailed("no_sync_source", "Audience has no sync source")
        encrypted = await self._store.klaviyo_key(run["project_id"])
        if encrypted is None:
            raise JobFailed("klaviyo_not_connected", "The project has no Klaviyo integration")
        api_key = self._decrypt(encrypted)
        checkpoint: Document = dict(run.get("checkpoint") or {})
        # The run record holds the counters of the pages already checkpointed (a resume goes on
        # counting from them).
        progress: Document = {
            name: run.get(name) or 0
            for name in ("pages", "profiles", "entered", "exited", "identified")
        }
        if "since" not in checkpoint:
            state = await self._store.sync_state(run["audience_id"]) or {}
            incremental = run.get("mode") == "incremental" and state.get("watermark")
            checkpoint["since"] = state["watermark"] if incremental else None
            checkpoint["next_url"] = self._source.first_profiles_url(
                sync_source["list_id"], checkpoint["since"]
            )
            checkpoint["watermark"] = state.get("watermark")
        while checkpoint.get("next_url"):
            page = await self._source.profiles_page(api_key, checkpoint["next_url"])
            watermark = await self._apply_page(run, page.profiles, progress)
            if watermark is not None and (
                checkpoint.get("watermark") is None or watermark > checkpoint["watermark"]
            ):
                checkpoint["watermark"] = watermark
            checkpoint["next_url"] = page.next_url
            progress["pages"] += 1
            await job.checkpoint(checkpoint, progress)
        if run.get("mode", "full") == "full":
            await self._reconcile(job, checkpoint, progress)
        await self._store.finish_sync(
            run["audience_id"],
            run["_id"],
            True,
            {"watermark": checkpoint.get("watermark"), "mode": run.get("mode", "full")},
        )

    async def _apply_page(
        self,
        run: Document,
        profiles: Sequence[SourceProfile],
        progress: Document,
    ) -> datetime | None:
        project_id, audience_id, run_id = run["project_id"], run["audience_id"], run["_id"]
        identities = [
            Identity(
                source_key=f"klaviyo:{p.id}",
                external_id=p.external_id,
                email=p.email,
                phone=p.phone,
            )
            for p in profiles
        ]
        user_ids = await self._identities.resolve(project_id, identities)
        current = await self._store.list_members(audience_id, user_ids)
        events: list[UserEventBase] = []
        seen: list[Document] = []
        for profile, user_id in zip(profiles, user_ids, strict=True):
            traits = klaviyo_traits(profile)
            digest = traits_digest(traits)
            member = current.get(user_id) or {}
            if traits and member.get("traits_digest") != digest:
                events.append(
                    TraitsIdentified(
                        event_id=deterministic_id("identify", project_id, user_id, digest),
                        project_id=project_id,
                        user_id=user_id,
                        traits=traits,
                    )
                )
                progress["identified"] += 1
            if not member.get("member"):
                events.append(
                    ListMembershipChanged(
                        event_id=deterministic_id("list", audience_id, user_id, "in", run_id),
                        project_id=project_id,
                        user_id=user_id,
                        audience_id=audience_id,
                        member=True,
                        source="klaviyo",
                    )
                )
                progress["entered"] += 1
            seen.append(
                {
                    "user_id": user_id,
                    "traits_digest": digest,
                    "source_id": profile.id,
                    "joined_group_at": profile.joined_group_at,
                }
            )
        await self._events.publish(events)
        MEMBERSHIP_EVENTS.labels(member="true", source="klaviyo").inc(
            sum(isinstance(e, ListMembershipChanged) for e in events)
        )
        await self._store.mark_seen(audience_id, project_id, run_id, seen)
        progress["profiles"] += len(profiles)
        joined = [p.joined_group_at for p in profiles if p.joined_group_at is not None]
        return max(joined) if joined else None

    async def _reconcile(self, job: JobHandle, checkpoint: Document, progress: Document) -> None:
        run = job.record
        project_id, audience_id, run_id = run["project_id"], run["audience_id"], run["_id"]
        while gone := await self._store.unseen_members(audience_id, run_id, self._reconcile_batch):
            await self._events.publish(
                [
                    ListMembershipChanged(
                        event_id=deterministic_id("list", audience_id, user_id, "out", run_id),
                        project_id=project_id,
                        user_id=user_id,
                        audience_id=audience_id,
                        member=False,
                        source="klaviyo",
                    )
                    for user_id in gone
                ]
            )
            MEMBERSHIP_EVENTS.labels(member="false", source="klaviyo").inc(len(gone))
            await self._store.mark_left(audience_id, gone, run_id)
            progress["exited"] += len(gone)
            await job.checkpoint(checkpoint, progress)


@dataclass(frozen=True)
class CsvLayout:
    """Where the known columns are in a header; the rest become metadata."""

    columns: list[str]
    known: dict[str, int]
    metadata: list[tuple[int, str]]

    @classmethod
    def from_header(cls, header: list[str] | None) -> "CsvLayout":
        names = [name.strip().lower() for name in header or []]
        known = {name: index for index, name in enumerate(names) if name in KNOWN_COLUMNS}
        if not any(name in known for name in IDENTIFIER_COLUMNS):
            raise JobFailed(
                "header_required",
                "The first row must be a header naming at least one of "
                + ", ".join(IDENTIFIER_COLUMNS),
            )
        if len(set(names)) != len(names):
            raise JobFailed("duplicate_columns", "The header names a column twice")
        metadata = [
            (index, metadata_key(original))
            for index, (name, original) in enumerate(zip(names, header or [], strict=True))
            if name not in KNOWN_COLUMNS and name
        ]
        return cls(columns=names, known=known, metadata=metadata)

    def parse(self, values: list[str]) -> tuple[Identity, dict[str, Any]]:
        """One row as an identity and traits; ValueError says why the row is bad."""
        if len(values) != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} fields, found {len(values)}")

        def cell(name: str) -> str | None:
            index = self.known.get(name)
            value = values[index].strip() if index is not None else ""
            return value or None

        user_id, external_id = cell("user_id"), cell("external_id")
        email, phone, full_name = cell("email"), cell("phone"), cell("full_name")
        if not any((user_id, external_id, email, phone)):
            raise ValueError("no user_id, external_id, email or phone")
        for name, value in (("user_id", user_id), ("external_id", external_id)):
            if value is not None and len(value) > MAX_ID_LENGTH:
                raise ValueError(f"{name} is longer than {MAX_ID_LENGTH} characters")
        if email is not None and not _EMAIL.match(email):
            raise ValueError(f"invalid email {email!r}")
        if phone is not None and not re.fullmatch(r"\+?\d{4,20}", normalize_phone(phone)):
            raise ValueError(f"invalid phone {phone!r}")
        traits: dict[str, Any] = {}
        for name, value in (
            ("external_id", external_id),
            ("email", email),
            ("phone", phone),
            ("full_name", full_name),
        ):
            if value is not None:
                traits[name] = value
        metadata = {key: values[index].strip() for index, key in self.metadata if values[index]}
        if metadata:
            traits["metadata"] = metadata
        identity = Identity(user_id=user_id, external_id=external_id, email=email, phone=phone)
        return identity, traits


Rows = list[tuple[int, list[str]]]


async def import_rows(
    job: JobHandle,
    files: CsvSource,
    path: Path,
    chunk_rows: int,
    import_chunk: Callable[[Rows, Document], Awaitable[None]],
) -> None:
    """Feed a file's rows to `import_chunk` chunk by chunk from the job's last checkpoint, which
    moves (with the counts and errors `import_chunk` keeps in `progress`) after each chunk."""
    record = job.record
    if record.get("rows_total") is None:
        # One quick pass first, so progress has a denominator.
        await job.update({"rows_total": await files.count_rows(path)})
    checkpoint: Document = dict(record.get("checkpoint") or {"rows_done": 0})
    progress: Document = {
        "rows_imported": record.get("rows_imported", 0),
        "rows_failed": record.get("rows_failed", 0),
        "errors": list(record.get("errors", [])),
    }
    async for chunk in files.chunks(path, checkpoint["rows_done"], chunk_rows):
        await import_chunk(chunk, progress)
        checkpoint["rows_done"] += len(chunk)
        await job.checkpoint(checkpoint, progress)


Layout = TypeVar("Layout")


class CsvFileImport:
    """What every CSV import shares: the uploaded file, its header read into a layout, and its
    rows streamed chunk by chunk, resumable at the last chunk."""

    def __init__(
        self,
        files: CsvSource,
        identities: IdentityResolver,
        events: UserEventPublisher,
        chunk_rows: int,
    ) -> None:
        self._files = files
        self._identities = identities
        self._events = events
        self._chunk_rows = chunk_rows

    async def _import_file(
        self,
        job: JobHandle,
        layout_of: Callable[[list[str] | None], Layout],
        import_chunk: Callable[
            [Document, Layout, list[tuple[int, list[str]]], Document], Awaitable[None]
        ],
    ) -> None:
        record = job.record
        path = self._files.path(record["file"])
        if not path.exists():
            raise JobFailed("file_missing", "The uploaded file is no longer there")
        layout = layout_of(await self._files.header(path))
        await import_rows(
            job,
            self._files,
            path,
            self._chunk_rows,
            lambda chunk, progress: import_chunk(record, layout, chunk, progress),
        )


class CsvImportService(CsvFileImport):
    """Streams an uploaded CSV into list events (a static audience's members)."""

    async def run(self, job: JobHandle) -> None:
        await self._import_file(job, CsvLayout.from_header, self._import_chunk)

    async def _import_chunk(
        self,
        record: Document,
        layout: CsvLayout,
        chunk: list[tuple[int, list[str]]],
        progress: Document,
    ) -> None:
        project_id, audience_id, import_id = (
            record["project_id"],
            record["audience_id"],
            record["_id"],
        )
        parsed: list[tuple[Identity, dict[str, Any]]] = []
        for row_number, values in chunk:
            try:
                parsed.append(layout.parse(values))
            except ValueError as exc:
                progress["rows_failed"] += 1
                if len(progress["errors"]) < MAX_REPORTED_ERRORS:
                    progress["errors"].append({"row": row_number, "message": str(exc)})
        ROWS_FAILED.inc(len(chunk) - len(parsed))
        user_ids = await self._identities.resolve(project_id, [identity for identity, _ in parsed])
        events: list[UserEventBase] = []
        for (_, traits), user_id in zip(parsed, user_ids, strict=True):
            if traits:
                events.append(
                    TraitsIdentified(
                        event_id=deterministic_id(
                            "identify", project_id, user_id, traits_digest(traits)
                        ),
                        project_id=project_id,
                        user_id=user_id,
                        traits=traits,
                    )
                )
            events.append(
                ListMembershipChanged(
                    event_id=deterministic_id("list", audience_id, user_id, "in", import_id),
                    project_id=project_id,
                    user_id=user_id,
                    audience_id=audience_id,
                    member=True,
                    source="csv",
                )
            )
        await self._events.publish(events)
        MEMBERSHIP_EVENTS.labels(member="true", source="csv").inc(len(parsed))
        ROWS_IMPORTED.inc(len(parsed))
        progress["rows_imported"] += len(parsed)


DEFAULT_COLUMNS = ["user_id", "email", "phone", "full_name", "joined_at"]


def _full_name(traits: dict[str, Any]) -> Any:
    if isinstance(traits.get("full_name"), str):
        return traits["full_name"]
    parts = [traits.get("first_name"), traits.get("last_name")]
    return " ".join(p for p in parts if isinstance(p, str)) or None


def project_member(member: Document, column: str) -> Any:
    """One column of a member: user_id, joined_at, full_name, or a (dotted) trait path."""
    traits: dict[str, Any] = member.get("traits") or {}
    if column == "user_id":
        return member.get("user_id")
    if column == "joined_at":
        return member.get("joined_at")
    if column == "full_name":
        return _full_name(traits)
    path = column.removeprefix("traits.").split(".")
    value: Any = traits
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def csv_cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([csv_cell(v) for v in values])
    return buffer.getvalue()


class ExportService:
    """Writes an audience's members to a CSV or JSONL file, page by page, resumable."""

    def __init__(
        self, members: MemberSource, sink_factory: Callable[[], ExportSink], page_rows: int
    ) -> None:
        self._members = members
        self._sink_factory = sink_factory
        self._page_rows = page_rows

    async def run(self, job: JobHandle) -> None:
        record = job.record
        columns: list[str] = list(record.get("columns") or DEFAULT_COLUMNS)
        include_traits = bool(record.get("include_traits"))
        if record.get("rows_total") is None:
            await job.update(
                {"rows_total": await self._members.count_members(record["audience_id"])}
            )
        checkpoint: Document = dict(record.get("checkpoint") or {})
        progress: Document = {"rows_written": record.get("rows_written", 0)}
        sink = self._sink_factory()
        await sink.open(record["file"], checkpoint.get("bytes"))
        if not checkpoint:
            header = [*columns, *(["traits"] if include_traits else [])]
            size = await sink.write([csv_line(header)] if record["format"] == "csv" else [])
            checkpoint = {"after": None, "bytes": size}
            await job.checkpoint(checkpoint, progress)
        async for page in self._members.member_pages(
            record["audience_id"], checkpoint["after"], self._page_rows
        ):
            lines = [self._line(record["format"], m, columns, include_traits) for m in page]
            checkpoint = {"after": page[-1]["user_id"], "bytes": await sink.write(lines)}
            progress["rows_written"] += len(page)
            ROWS_EXPORTED.inc(len(page))
            await job.checkpoint(checkpoint, progress)
        await job.update({"bytes": await sink.complete()})

    @staticmethod
    def _line(fmt: str, member: Document, columns: list[str], include_traits: bool) -> str:
        values = [project_member(member, column) for column in columns]
        if fmt == "csv":
            return csv_line([*values, *([member.get("traits") or {}] if include_traits else [])])
        row = {column: _plain(value) for column, value in zip(columns, values, strict=True)}
        if include_traits:
            row["traits"] = _plain(member.get("traits") or {})
        return json.dumps(row, sort_keys=False, default=str) + "\n"
