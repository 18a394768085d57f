"""Use cases behind the dataset endpoints (seed 001 `type: dataset`): CSV uploads recorded and
handed to the sync service, import status, the datasets of a project, and the check that a
dataset audience's rule names fields that exist."""

import csv
from collections.abc import AsyncIterator
from typing import Any, Protocol

from audience_api.errors import InvalidRequest, NotFound
from audience_api.integrations import CommandPublisher, Files, queued_import
from audience_api.services import Principal, new_id
from audience_shared import rules
from audience_shared.commands import DatasetImportRequested
from audience_shared.datasets import (
    DATASET_NAME,
    DATASET_TRAIT,
    KEY_COLUMNS,
    MAX_FIELDS,
    dataset_fields,
    field_name,
)

Document = dict[str, Any]


class DatasetRecords(Protocol):
    async def dataset(self, project_id: str, name: str) -> Document | None: ...

    async def datasets(self, project_id: str) -> list[Document]: ...

    async def add_fields(self, project_id: str, name: str, fields: list[str]) -> None:
        """Create the dataset if new; add fields it did not have (never drop any)."""
        ...

    async def insert_import(self, record: Document) -> None: ...

    async def import_record(self, import_id: str) -> Document | None: ...

    async def mark_import_failed(self, import_id: str, error: Document) -> None: ...


def header_layout(first_line: str, key: str | None) -> tuple[str, list[str]]:
    """The key column and the field names of a dataset CSV's header row."""
    header = next(csv.reader([first_line]), [])
    names = [name.strip().lower() for name in header]
    if key is None:
        key = next((column for column in KEY_COLUMNS if column in names), None)
    if key is None or key not in names:
        raise InvalidRequest(
            "key_column_missing",
            f"The first row must be a header naming the key column ({key})"
            if key
            else "The first row must be a header naming a key column: " + ", ".join(KEY_COLUMNS),
            {"header": header[:MAX_FIELDS]},
        )
    try:
        fields = [
            field_name(original)
            for name, original in zip(names, header, strict=True)
            if name != key
        ]
    except ValueError as exc:
        raise InvalidRequest("invalid_columns", str(exc)) from exc
    if not fields:
        raise InvalidRequest("no_fields", "The header names no field besides the key column")
    if len(fields) > MAX_FIELDS:
        raise InvalidRequest("too_many_fields", f"A dataset has at most {MAX_FIELDS} fields")
    repeated = sorted({name for name in fields if fields.count(name) > 1})
    if repeated or names.count(key) > 1:
        raise InvalidRequest(
            "duplicate_columns", "The header names a column twice", repeated or [key]
        )
    return key, fields


def check_name(name: str) -> str:
    if not DATASET_NAME.match(name):
        raise InvalidRequest(
            "invalid_dataset_name",
            "A dataset name is 1-63 lower-case letters, digits or _, starting with a letter",
            {"name": name[:100]},
        )
    return name


class DatasetService:
    def __init__(self, records: DatasetRecords, commands: CommandPublisher, files: Files) -> None:
        self._records = records
        self._commands = commands
        self._files = files

    async def start_import(
        self,
        principal: Principal,
        name: str,
        project: str | None,
        key: str | None,
        chunks: AsyncIterator[bytes],
    ) -> Document:
        principal.require_write()
        check_name(name)
        project_id = principal.project_for(project)
        import_id = new_id("imp")
        upload = f"{import_id}.csv"
        size = await self._files.save_upload(upload, chunks)
        try:
            if size == 0:
                raise InvalidRequest("header_required", "The file is empty; send a header row")
            key, fields = header_layout(await self._files.first_line(upload), key)
        except InvalidRequest:
            await self._files.discard_upload(upload)
            raise
        await self._records.add_fields(project_id, name, fields)
        await self._records.insert_import(
            queued_import(
                import_id,
                "dataset_import",
                upload,
                size,
                project_id=project_id,
                dataset=name,
                dataset_id=f"{project_id}|{name}",
                key=key,
                fields=fields,
            )
        )
        try:
            await self._commands.publish_command(
                DatasetImportRequested(project_id=project_id, dataset=name, import_id=import_id)
            )
        except Exception:
            # Not accepted: no queued import stays behind looking as if it will run.
            await self._records.mark_import_failed(
                import_id, {"code": "not_sent", "message": "broker unavailable"}
            )
            raise
        return {
            "import_id": import_id,
            "dataset": name,
            "status": "queued",
            "key": key,
            "fields": fields,
        }

    async def import_status(
        self, principal: Principal, name: str, import_id: str, project: str | None
    ) -> Document:
        project_id = principal.project_for(project)
        record = await self._records.import_record(import_id)
        if record is None or record["dataset_id"] != f"{project_id}|{name}":
            raise NotFound("import", import_id)
        total = record.get("rows_total")
        imported, failed = record.get("rows_imported", 0), record.get("rows_failed", 0)
        done = record["status"] == "completed"
        return {
            "import_id": import_id,
            "dataset": name,
            "key": record["key"],
            "fields": record["fields"],
            "status": record["status"],
            "rows_total": total,
            "rows_imported": imported,
            "rows_failed": failed,
            "progress": 1.0
            if done
            else round(min(1.0, (imported + failed) / total), 4)
            if total
            else 0.0,
            "errors": record.get("errors", [])[:100],
            "error": record.get("error"),
            "created_at": record["created_at"],
            "finished_at": record.get("finished_at"),
        }

    async def get(self, principal: Principal, name: str, project: str | None) -> Document:
        doc = await self._records.dataset(principal.project_for(project), name)
        if doc is None:
            raise NotFound("dataset", name)
        return self._resource(doc)

    async def list(self, principal: Principal, project: str | None) -> list[Document]:
        return [
            self._resource(doc)
            for doc in await self._records.datasets(principal.project_for(project))
        ]

    async def check_rule(self, project_id: str, rule: rules.Group) -> None:
        """A dataset audience's rule must read fields of datasets that exist (400 otherwise)."""
        wanted = dataset_fields(rules.references(rule).traits)
        if not wanted:
            raise InvalidRequest(
                "dataset_rule_required",
                f"A dataset audience needs a rule on {DATASET_TRAIT}.<name>.<field>",
            )
        for name, fields in sorted(wanted.items()):
            doc = await self._records.dataset(project_id, name)
            if doc is None:
                raise InvalidRequest(
                    "unknown_dataset",
                    f"No dataset {name!r}: import it first with POST /v1/datasets/{name}/import",
                    {"dataset": name},
                )
            unknown = sorted(fields - set(doc.get("fields", [])))
            if unknown:
                raise InvalidRequest(
                    "unknown_dataset_field",
                    f"Dataset {name!r} has no field {', '.join(unknown)}",
                    {"dataset": name, "unknown": unknown, "fields": doc.get("fields", [])},
                )

    @staticmethod
    def _resource(doc: Document) -> Document:
        return {
            "name": doc["name"],
            "project_id": doc["project_id"],
            "fields": sorted(doc.get("fields", [])),
            "created_at": doc.get("created_at"),
            "updated_at": doc.get("updated_at"),
        }
