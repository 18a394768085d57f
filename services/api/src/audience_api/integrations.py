"""Use cases behind the sync endpoints: Klaviyo integration and list import, sync triggers, CSV
imports and unloads. The work itself is the sync service's; these record it and send commands."""

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from audience_api.errors import Conflict, InvalidRequest, NotFound
from audience_api.schemas import column_list
from audience_api.services import AudienceService, Principal, new_id, utcnow
from audience_shared.commands import (
    AnySyncCommand,
    ExportRequested,
    ImportRequested,
    SyncRequested,
    effective_schedule,
    new_sync_run,
    next_refresh_at,
)
from audience_shared.events import AudienceChanged

Document = dict[str, Any]

IMPORT_IDENTIFIERS = ("user_id", "external_id", "email", "phone")


class SyncRecords(Protocol):
    async def project_organization(self, project_id: str) -> str | None: ...

    async def audience(self, project_id: str, audience_id: str) -> Document | None: ...

    async def synced_audience_for(self, project_id: str, list_id: str) -> Document | None: ...

    async def insert_audience(self, audience: Document) -> None: ...

    async def integration(self, project_id: str, kind: str) -> Document | None: ...

    async def save_integration(self, doc: Document) -> Document: ...

    async def delete_integration(self, project_id: str, kind: str) -> bool: ...

    async def take_sync_lock(self, audience_id: str, run_id: str, now: datetime) -> str | None: ...

    async def release_sync_lock(self, audience_id: str, run_id: str) -> None: ...

    async def sync_state(self, audience_id: str) -> Document | None: ...

    async def next_refresh_at(self, audience_id: str) -> datetime | None: ...

    async def insert(self, collection: str, record: Document) -> None: ...

    async def record(self, collection: str, record_id: str) -> Document | None: ...

    async def latest(self, collection: str, audience_id: str) -> Document | None: ...

    async def mark_failed(self, collection: str, record_id: str, error: Document) -> None: ...


class CommandPublisher(Protocol):
    async def publish_command(self, command: AnySyncCommand) -> None: ...


class AudienceChangePublisher(Protocol):
    async def publish_audience_changed(self, event: AudienceChanged) -> None: ...


class KeyCipher(Protocol):
    def encrypt(self, plain: str) -> bytes: ...

    def decrypt(self, token: bytes) -> str | None: ...


class KlaviyoLists(Protocol):
    async def lists(self, api_key: str) -> list[Document]: ...


class Files(Protocol):
    async def save_upload(self, name: str, chunks: AsyncIterator[bytes]) -> int: ...

    async def first_line(self, name: str) -> str: ...

    async def discard_upload(self, name: str) -> None: ...

    def export_path(self, name: str) -> Path | None: ...


def _run_record(audience: Document, run_id: str, mode: str, trigger: str) -> Document:
    return new_sync_run(run_id, audience, mode, trigger, utcnow())


def queued_import(import_id: str, kind: str, file: str, size: int, **fields: Any) -> Document:
    """A CSV import as the gateway records it: queued, with nothing counted yet."""
    now = utcnow()
    return {
        "_id": import_id,
        "kind": kind,
        **fields,
        "file": file,
        "bytes": size,
        "status": "queued",
        "attempts": 0,
        "rows_total": None,
        "rows_imported": 0,
        "rows_failed": 0,
        "errors": [],
        "created_at": now,
        "updated_at": now,
    }


def parse_columns(columns: Sequence[str] | str | None) -> list[str] | None:
    """The unload column projection: a list, or seed 001's comma-separated clause."""
    if columns is None:
        return None
    try:
        return column_list(columns if isinstance(columns, str) else list(columns))
    except ValueError as exc:
        raise InvalidRequest("invalid_columns", str(exc), {"columns": columns}) from exc


class IntegrationService:
    def __init__(
        self,
        records: SyncRecords,
        commands: CommandPublisher,
        changes: AudienceChangePublisher,
        audiences: AudienceService,
        cipher: KeyCipher,
        klaviyo: KlaviyoLists,
        files: Files,
    ) -> None:
        self._records = records
        self._commands = commands
        self._changes = changes
        self._audiences = audiences
        self._cipher = cipher
        self._klaviyo = klaviyo
        self._files = files

    # ---- Klaviyo integration ------------------------------------------------------------

    async def connect_klaviyo(
        self, principal: Principal, project: str | None, api_key: str
    ) -> Document:
        principal.require_write()
        project_id = await self._project(principal, project)
        # Refuse a key Klaviyo refuses, now rather than at the first sync.
        await self._klaviyo.lists(api_key)
        now = utcnow()
        doc = await self._records.save_integration(
            {
                "_id": f"{project_id}/klaviyo",
                "type": "klaviyo",
                "project_id": project_id,
                "api_key_encrypted": self._cipher.encrypt(api_key),
                "key_last4": api_key[-4:],
                "created_at": now,
                "updated_at": now,
            }
        )
        return self._integration(doc)

    async def get_klaviyo(self, principal: Principal, project: str | None) -> Document:
        project_id = await self._project(principal, project)
        doc = await self._records.integration(project_id, "klaviyo")
        if doc is None:
            raise NotFound("integration", "klaviyo")
        return self._integration(doc)

    async def delete_klaviyo(self, principal: Principal, project: str | None) -> None:
        principal.require_write()
        project_id = await self._project(principal, project)
        if not await self._records.delete_integration(project_id, "klaviyo"):
            raise NotFound("integration", "klaviyo")

    async def import_klaviyo_lists(
        self, principal: Principal, project: str | None, list_ids: Sequence[str] | None
    ) -> list[Document]:
        """One synced audience per Klaviyo list (named after it), each with a sync started."""
        principal.require_write()
        project_id = await self._project(principal, project)
        api_key = await self._klaviyo_key(project_id)
        available = {item["id"]: item for item in await self._klaviyo.lists(api_key)}
        wanted = list(dict.fromkeys(list_ids)) if list_ids is not None else list(available)
        unknown = [list_id for list_id in wanted if list_id not in available]
        if unknown:
            raise InvalidRequest(
                "unknown_lists", "Klaviyo has no list with these ids", {"list_ids": unknown}
            )
        created = []
        for list_id in wanted:
            audience = await self._records.synced_audience_for(project_id, list_id)
            if audience is None:
                audience = await self._create_synced(project_id, available[list_id])
            run_id = new_id("run")
            if await self._records.take_sync_lock(audience["_id"], run_id, utcnow()) is None:
                await self._start_run(audience, run_id, "full", "import")
            resource = await self._audiences.get(principal, audience["_id"], project_id)
            created.append(
                {**resource, "status": "syncing", "sync_source": audience["sync_source"]}
            )
        return created

    async def _create_synced(self, project_id: str, source_list: Document) -> Document:
        now = utcnow()
        audience: Document = {
            "_id": new_id("aud"),
            "project_id": project_id,
            "name": source_list["name"] or f"Klaviyo list {source_list['id']}",
            "description": f"Synced from Klaviyo list {source_list['id']}",
            "kind": "synced",
            "type": "events",
            "input": None,
            "criteria": None,
            "rule": None,
            "rule_version": 1,
            "refresh_schedule": "daily",
            "group_id": None,
            "sync_source": {"type": "klaviyo", "list_id": source_list["id"]},
            "archived": False,
            "created_at": now,
            "updated_at": now,
        }
        await self._records.insert_audience(audience)
        await self._changes.publish_audience_changed(
            AudienceChanged(
                project_id=project_id, audience_id=audience["_id"], change="created", version=1
            )
        )
        return audience

    # ---- sync runs ----------------------------------------------------------------------

    async def trigger_sync(
        self,
        principal: Principal,
        audience_id: str,
        project: str | None,
        mode: Literal["full", "incremental"] = "full",
    ) -> Document:
        principal.require_write()
        audience = await self._audience(principal, audience_id, project)
        if audience.get("kind") != "synced":
            raise InvalidRequest("not_a_synced_list", "Audience is not a synced list")
        if not (audience.get("sync_source") or {}).get("list_id"):
            raise InvalidRequest("no_sync_source", "Audience has no sync source")
        await self._klaviyo_key(audience["project_id"])
        run_id = new_id("run")
        holder = await self._records.take_sync_lock(audience_id, run_id, utcnow())
        if holder is not None:
            raise Conflict("sync_in_progress", "Sync already in progress", {"run_id": holder})
        await self._start_run(audience, run_id, mode, "api")
        return {"run_id": run_id, "audience_id": audience_id, "status": "queued", "mode": mode}

    async def _start_run(self, audience: Document, run_id: str, mode: str, trigger: str) -> None:
        await self._records.insert("sync_runs", _run_record(audience, run_id, mode, trigger))
        try:
            await self._commands.publish_command(
                SyncRequested(
                    project_id=audience["project_id"],
                    audience_id=audience["_id"],
                    run_id=run_id,
                    mode=mode,
                    trigger=trigger,
                )
            )
        except Exception:
            # Not accepted: leave no queued run holding the lock behind.
            await self._records.mark_failed(
                "sync_runs", run_id, {"code": "not_sent", "message": "broker unavailable"}
            )
            await self._records.release_sync_lock(audience["_id"], run_id)
            raise

    async def sync_status(
        self, principal: Principal, audience_id: str, project: str | None, run_id: str | None
    ) -> Document:
        audience = await self._audience(principal, audience_id, project)
        if run_id is None:
            run = await self._records.latest("sync_runs", audience_id)
        else:
            run = await self._records.record("sync_runs", run_id)
            if run is None or run["audience_id"] != audience_id:
                raise NotFound("sync run", run_id)
        state = await self._records.sync_state(audience_id) or {}
        schedule = effective_schedule(audience["kind"], audience.get("refresh_schedule"))
        return {
            "audience_id": audience_id,
            "sync_source": audience.get("sync_source"),
            "in_progress": bool(state.get("active_run_id")),
            "last_success_at": state.get("last_success_at"),
            "last_full_at": state.get("last_full_at"),
            "next_refresh_at": await self._records.next_refresh_at(audience_id)
            or next_refresh_at(schedule, utcnow()),
            "run": self._run(run) if run else None,
        }

    # ---- CSV imports --------------------------------------------------------------------

    async def start_import(
        self,
        principal: Principal,
        audience_id: str,
        project: str | None,
        chunks: AsyncIterator[bytes],
    ) -> Document:
        principal.require_write()
        audience = await self._audience(principal, audience_id, project)
        if audience.get("kind") != "static":
            raise InvalidRequest(
                "not_a_static_list",
                "Only static lists take CSV imports",
                {"kind": audience["kind"]},
            )
        import_id = new_id("imp")
        name = f"{import_id}.csv"
        size = await self._files.save_upload(name, chunks)
        header = [c.strip().lower() for c in (await self._files.first_line(name)).split(",")]
        if size == 0 or not any(c.strip('"') in IMPORT_IDENTIFIERS for c in header):
            await self._files.discard_upload(name)
            raise InvalidRequest(
                "header_required",
                "The first row must be a header naming at least one of "
                + ", ".join(IMPORT_IDENTIFIERS),
            )
        await self._records.insert(
            "imports",
            queued_import(
                import_id,
                "import",
                name,
                size,
                project_id=audience["project_id"],
                audience_id=audience_id,
            ),
        )
        await self._commands.publish_command(
            ImportRequested(
                project_id=audience["project_id"], audience_id=audience_id, import_id=import_id
            )
        )
        return {"import_id": import_id, "status": "queued"}

    async def import_status(
        self, principal: Principal, audience_id: str, import_id: str, project: str | None
    ) -> Document:
        await self._audience(principal, audience_id, project)
        record = await self._records.record("imports", import_id)
        if record is None or record["audience_id"] != audience_id:
            raise NotFound("import", import_id)
        total = record.get("rows_total")
        done = record.get("rows_imported", 0) + record.get("rows_failed", 0)
        return {
            "import_id": import_id,
            "audience_id": audience_id,
            "status": record["status"],
            "rows_total": total,
            "rows_imported": record.get("rows_imported", 0),
            "rows_failed": record.get("rows_failed", 0),
            "progress": _progress(record["status"], done, total),
            "errors": record.get("errors", [])[:100],
            "error": record.get("error"),
            "created_at": record["created_at"],
            "finished_at": record.get("finished_at"),
        }

    # ---- unloads ------------------------------------------------------------------------

    async def start_export(
        self,
        principal: Principal,
        audience_id: str,
        project: str | None,
        fmt: Literal["csv", "jsonl"],
        columns: Sequence[str] | str | None,
        include_traits: bool,
    ) -> Document:
        principal.require_write()
        audience = await self._audience(principal, audience_id, project)
        projection = parse_columns(columns)
        export_id = new_id("exp")
        now = utcnow()
        await self._records.insert(
            "exports",
            {
                "_id": export_id,
                "kind": "export",
                "project_id": audience["project_id"],
                "audience_id": audience_id,
                "format": fmt,
                "columns": projection,
                "include_traits": include_traits,
                "file": f"{export_id}.{fmt}",
                "trigger": "api",
                "status": "queued",
                "attempts": 0,
                "rows_total": None,
                "rows_written": 0,
                "created_at": now,
                "updated_at": now,
            },
        )
        await self._commands.publish_command(
            ExportRequested(
                project_id=audience["project_id"], audience_id=audience_id, export_id=export_id
            )
        )
        return {"export_id": export_id, "status": "queued"}

    async def latest_export(
        self, principal: Principal, audience_id: str, project: str | None
    ) -> Document:
        await self._audience(principal, audience_id, project)
        record = await self._records.latest("exports", audience_id)
        if record is None:
            raise NotFound("export", audience_id)
        return self._export_status(record)

    async def export_status(self, principal: Principal, export_id: str) -> Document:
        return self._export_status(await self._export(principal, export_id))

    @staticmethod
    def _export_status(record: Document) -> Document:
        export_id = record["_id"]
        total = record.get("rows_total")
        return {
            "export_id": export_id,
            "audience_id": record["audience_id"],
            "status": record["status"],
            "format": record["format"],
            "columns": record.get("columns"),
            "include_traits": record.get("include_traits", False),
            "trigger": record.get("trigger"),
            "rows_total": total,
            "row_count": record.get("rows_written", 0),
            "rows_exported": record.get("rows_written", 0),
            "progress": _progress(record["status"], record.get("rows_written", 0), total),
            "bytes": record.get("bytes"),
            "error": record.get("error"),
            "created_at": record["created_at"],
            "finished_at": record.get("finished_at"),
        }

    async def export_file(self, principal: Principal, export_id: str) -> tuple[Path, str]:
        record = await self._export(principal, export_id)
        if record["status"] != "completed":
            raise Conflict(
                "export_not_ready", "The export has not completed", {"status": record["status"]}
            )
        path = self._files.export_path(record["file"])
        if path is None:
            raise NotFound("export file", export_id)
        return path, record["format"]

    async def _export(self, principal: Principal, export_id: str) -> Document:
        record = await self._records.record("exports", export_id)
        if record is None or not await self._reaches(principal, record["project_id"]):
            raise NotFound("export", export_id)
        return record

    # ---- shared checks ------------------------------------------------------------------

    async def _reaches(self, principal: Principal, project_id: str) -> bool:
        if principal.project_id is not None:
            return principal.project_id == project_id
        return await self._records.project_organization(project_id) == principal.organization_id

    async def _project(self, principal: Principal, project: str | None) -> str:
        project_id = principal.project_for(project)
        if not await self._reaches(principal, project_id):
            raise NotFound("project", project_id)
        return project_id

    async def _audience(
        self, principal: Principal, audience_id: str, project: str | None
    ) -> Document:
        project_id = principal.project_for(project)
        audience = await self._records.audience(project_id, audience_id)
        if audience is None or not await self._reaches(principal, project_id):
            raise NotFound("audience", audience_id)
        return audience

    async def _klaviyo_key(self, project_id: str) -> str:
        doc = await self._records.integration(project_id, "klaviyo")
        key = self._cipher.decrypt(doc["api_key_encrypted"]) if doc else None
        if key is None:
            raise InvalidRequest(
                "klaviyo_not_connected", "Connect Klaviyo first: POST /v1/integrations/klaviyo"
            )
        return key

    @staticmethod
    def _integration(doc: Document) -> Document:
        return {
            "type": doc["type"],
            "project_id": doc["project_id"],
            "api_key": f"****{doc['key_last4']}",
            "key_last4": doc["key_last4"],
            "created_at": doc["created_at"],
            "updated_at": doc["updated_at"],
        }

    @staticmethod
    def _run(run: Document) -> Document:
        return {
            "run_id": run["_id"],
            "mode": run.get("mode"),
            "trigger": run.get("trigger"),
            "status": run["status"],
            "pages": run.get("pages", 0),
            "profiles": run.get("profiles", 0),
            "entered": run.get("entered", 0),
            "exited": run.get("exited", 0),
            "resumes": run.get("resumes", 0),
            # For progress bars: Klaviyo does not say how long a list is before the last page,
            # so the total is known (and progress is 1.0) only once the run completed.
            "rows_imported": run.get("profiles", 0),
            "rows_total": run.get("profiles", 0) if run["status"] == "completed" else None,
            "progress": 1.0 if run["status"] == "completed" else None,
            "error": run.get("error"),
            "created_at": run["created_at"],
            "finished_at": run.get("finished_at"),
        }


def _progress(status: str, done: int, total: int | None) -> float:
    if status == "completed":
        return 1.0
    if not total:
        return 0.0
    return round(min(1.0, done / total), 4)
