"""Dataset imports (seed 001 `type: dataset`): CSV rows become identify events that set
`dataset.<name>.<field>` traits on the users the rows are keyed to."""

import math
import re
from dataclasses import dataclass
from typing import Any

import structlog

from audience_shared.datasets import DATASET_TRAIT, KEY_COLUMNS, field_name
from audience_shared.events import TraitsIdentified, UserEventBase
from audience_sync.errors import JobFailed
from audience_sync.metrics import ROWS_FAILED, ROWS_IMPORTED
from audience_sync.ports import Document, JobHandle
from audience_sync.services import (
    _EMAIL,
    MAX_ID_LENGTH,
    MAX_REPORTED_ERRORS,
    CsvFileImport,
    Identity,
    deterministic_id,
    traits_digest,
)

log = structlog.get_logger()

UNKNOWN_USER = "unknown user"
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def dataset_value(cell: str) -> Any:
    """A cell as a typed value, so rules compare numbers as numbers: integers, decimals,
    true/false, empty as null; anything else stays a string (ISO dates become date-times
    where every trait is coerced)."""
    text = cell.strip()
    if not text:
        return None
    if _INTEGER.match(text):
        return int(text)  # at most 18 digits: always fits the store's 64-bit integers
    if _DECIMAL.match(text):
        number = float(text)
        return number if math.isfinite(number) else text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


@dataclass(frozen=True)
class DatasetLayout:
    """Which column keys the rows to users and which columns are the dataset's fields."""

    width: int
    key: str
    key_index: int
    fields: list[tuple[int, str]]

    @classmethod
    def from_header(cls, header: list[str] | None, key: str) -> "DatasetLayout":
        names = [name.strip().lower() for name in header or []]
        if key not in KEY_COLUMNS or key not in names:
            raise JobFailed("key_column_missing", f"The header has no {key} column")
        try:
            fields = [
                (index, field_name(original))
                for index, (name, original) in enumerate(zip(names, header or [], strict=True))
                if name != key
            ]
        except ValueError as exc:
            raise JobFailed("invalid_columns", str(exc)) from exc
        if len({name for _, name in fields}) != len(fields):
            raise JobFailed("duplicate_columns", "The header names a field twice")
        return cls(width=len(names), key=key, key_index=names.index(key), fields=fields)

    def parse(self, values: list[str]) -> tuple[Identity, dict[str, Any]]:
        """One row as the identity it is keyed by and its fields; ValueError says why not."""
        if len(values) != self.width:
            raise ValueError(f"expected {self.width} fields, found {len(values)}")
        key_value = values[self.key_index].strip()
        if not key_value:
            raise ValueError(f"no {self.key}")
        if len(key_value) > MAX_ID_LENGTH:
            raise ValueError(f"{self.key} is longer than {MAX_ID_LENGTH} characters")
        if self.key == "email" and not _EMAIL.match(key_value):
            raise ValueError(f"invalid email {key_value!r}")
        identity = Identity(**{self.key: key_value})
        return identity, {name: dataset_value(values[index]) for index, name in self.fields}


class DatasetImportService(CsvFileImport):
    """Streams an uploaded dataset CSV into identify events chunk by chunk, resumable.

    Rows keyed by user_id name that user; rows keyed by external_id or email are matched to
    users Audiences already knows (identity links, or a user whose id is the external_id) and
    a row matching none is reported as "unknown user": a dataset describes users, it does not
    create them from an email.
    """

    async def run(self, job: JobHandle) -> None:
        key = job.record["key"]
        await self._import_file(
            job, lambda header: DatasetLayout.from_header(header, key), self._import_chunk
        )

    async def _import_chunk(
        self,
        record: Document,
        layout: DatasetLayout,
        chunk: list[tuple[int, list[str]]],
        progress: Document,
    ) -> None:
        project_id, dataset, import_id = record["project_id"], record["dataset"], record["_id"]
        parsed: list[tuple[int, Identity, dict[str, Any]]] = []
        failed: list[tuple[int, str]] = []
        for row_number, values in chunk:
            try:
                identity, fields = layout.parse(values)
            except ValueError as exc:
                failed.append((row_number, str(exc)))
                continue
            parsed.append((row_number, identity, fields))
        user_ids = await self._identities.known(project_id, [identity for _, identity, _ in parsed])
        events: list[UserEventBase] = []
        for (row_number, _, fields), user_id in zip(parsed, user_ids, strict=True):
            if user_id is None:
                failed.append((row_number, UNKNOWN_USER))
                continue
            traits = {DATASET_TRAIT: {dataset: fields}}
            events.append(
                TraitsIdentified(
                    # The import's id in it: a later import of the same values is a new fact
                    # (it must win over values set in between); a resumed chunk is not.
                    event_id=deterministic_id(
                        "dataset", import_id, str(row_number), user_id, traits_digest(traits)
                    ),
                    project_id=project_id,
                    user_id=user_id,
                    traits=traits,
                )
            )
        await self._events.publish(events)
        ROWS_IMPORTED.inc(len(events))
        ROWS_FAILED.inc(len(failed))
        progress["rows_imported"] += len(events)
        progress["rows_failed"] += len(failed)
        for row_number, message in sorted(failed):
            if len(progress["errors"]) < MAX_REPORTED_ERRORS:
                progress["errors"].append({"row": row_number, "message": message})
