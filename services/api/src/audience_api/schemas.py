"""Request and response bodies of the gateway's public API."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
MAX_COLUMNS = 100


def column_list(columns: list[str] | str) -> list[str]:
    """Seed 001's column projection: a list, or a comma-separated clause, of field names."""
    names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else list(columns)
    names = [n for n in names if n]
    bad = [n for n in names if not COLUMN_NAME.match(n)]
    if bad or not names or len(names) > MAX_COLUMNS:
        raise ValueError(
            f"columns must be 1 to {MAX_COLUMNS} field names such as email or metadata.plan"
            + (f"; not {', '.join(bad)}" if bad else "")
        )
    return names


Columns = Annotated[
    list[str] | str,
    AfterValidator(column_list),
    Field(description="Column projection of unloads: a list, or a comma-separated clause"),
]
Mode = Literal["preview", "unload"]
UnloadFormat = Literal["csv", "jsonl"]


class Strict(BaseModel):
    """Unknown fields are a 400 that names them, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class AudienceCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    project_id: str | None = None
    app_id: str | None = Field(default=None, description="Alias of project_id (seed 000)")
    kind: Literal["dynamic", "static", "synced"] = "dynamic"
    type: Literal["events", "intents", "dataset"] = "events"
    criteria: str | None = Field(default=None, max_length=10_000)
    filter: dict[str, Any] | None = None
    filters: list[dict[str, Any]] | None = None
    properties: dict[str, list[Any]] | None = None
    refresh_schedule: Literal["realtime", "daily", "weekly", "manual"] | None = Field(
        default=None, description="Default by type: events realtime, intents daily, dataset weekly"
    )
    group_id: str | None = None
    mode: Mode | None = Field(
        default=None, description="preview (size estimate only) or unload (write output files)"
    )
    columns: Columns | None = None
    unload_format: UnloadFormat | None = Field(default=None, description="Default csv")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Active Premium Users",
                    "criteria": "Users with plan=premium AND last_active within 7 days",
                }
            ]
        },
    )


class PageInfo(BaseModel):
    has_next_page: bool
    end_cursor: str | None


class IdentifyItem(Strict):
    user_id: str = Field(min_length=1, max_length=200)
    traits: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)


class TrackItem(Strict):
    user_id: str = Field(min_length=1, max_length=200)
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)


class IngestAccepted(BaseModel):
    accepted: int
    errors: list[dict[str, Any]] = Field(default_factory=list)


class AudienceUpdate(Strict):
    """Every field optional; a new rule input re-materializes the audience."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    project_id: str | None = None
    criteria: str | None = Field(default=None, max_length=10_000)
    filter: dict[str, Any] | None = None
    filters: list[dict[str, Any]] | None = None
    properties: dict[str, list[Any]] | None = None
    refresh_schedule: Literal["realtime", "daily", "weekly", "manual"] | None = None
    group_id: str | None = None
    mode: Mode | None = None
    columns: Columns | None = None
    unload_format: UnloadFormat | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Active Premium Users (EU)",
                    "criteria": "Users with plan=premium AND region=EU",
                }
            ]
        },
    )


class AudiencePreview(Strict):
    """Any rule input; nothing is saved."""

    project_id: str | None = None
    app_id: str | None = None
    criteria: str | None = Field(default=None, max_length=10_000)
    filter: dict[str, Any] | None = None
    filters: list[dict[str, Any]] | None = None
    properties: dict[str, list[Any]] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "filter": {
                        "match": "all",
                        "rules": [
                            {
                                "type": "trait",
                                "field": "plan",
                                "operator": "is",
                                "value": "premium",
                            },
                            {
                                "type": "trait",
                                "field": "last_active",
                                "operator": "within_last",
                                "value": "7d",
                            },
                        ],
                    }
                }
            ]
        },
    )


class RuleChangePreview(AudiencePreview):
    """A new rule for an existing audience: who would enter, leave and stay."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"criteria": "Users with plan in (premium, pro) AND last_active within 7 days"}
            ]
        },
    )
