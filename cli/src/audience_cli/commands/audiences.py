"""`audience audiences`: list, show, create, members and export."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from audience_cli.commands import session_of
from audience_cli.jobs import follow
from audience_cli.output import fields, table
from audience_cli.session import Session

app = typer.Typer(no_args_is_help=True)

PAGE_MAX = 100  # the API's largest page

LIST_COLUMNS = [
    ("id", "ID"),
    ("name", "Name"),
    ("kind", "Kind"),
    ("type", "Type"),
    ("status", "Status"),
    ("user_count", "Size"),
    ("as_of", "As of"),
]
SHOW_COLUMNS = [
    ("id", "ID"),
    ("name", "Name"),
    ("description", "Description"),
    ("project_id", "Project"),
    ("kind", "Kind"),
    ("type", "Type"),
    ("status", "Status"),
    ("user_count", "Size"),
    ("user_count_is_estimate", "Estimate"),
    ("refresh_schedule", "Refresh"),
    ("criteria", "Criteria"),
    ("created_at", "Created"),
    ("updated_at", "Updated"),
]
MEMBER_COLUMNS = [
    ("user_id", "User"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("full_name", "Name"),
    ("joined_at", "Joined"),
]


class Kind(StrEnum):
    dynamic = "dynamic"
    static = "static"


class AudienceType(StrEnum):
    events = "events"
    intents = "intents"
    dataset = "dataset"


class Format(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


def pages(
    session: Session, path: str, limit: int, **params: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` items across cursor pages; the cursor to continue from, if any."""
    client = session.client()
    items: list[dict[str, Any]] = []
    after = params.pop("after", None)
    while len(items) < limit:
        body = client.get(path, first=min(PAGE_MAX, limit - len(items)), after=after, **params)
        items.extend(body["items"])
        info = body.get("page_info") or {}
        after = info.get("end_cursor") if info.get("has_next_page") else None
        if after is None:
            break
    return items, after


@app.command("list")
def list_audiences(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="At most this many audiences.")] = 100,
) -> None:
    """Audiences of the project with their status and size."""
    session = session_of(ctx)
    items, more = pages(session, "/v1/audiences", limit)
    session.output.show(
        {"items": items, "next_cursor": more},
        lambda: table(items, LIST_COLUMNS, title="Audiences"),
    )
    if more:
        session.output.note(f"More audiences exist; raise --limit to see them (shown {limit}).")


@app.command("show")
def show(
    ctx: typer.Context, audience_id: Annotated[str, typer.Argument(help="Audience ID.")]
) -> None:
    """One audience: its definition, size and refresh status."""
    session = session_of(ctx)
    client = session.client()
    audience = client.get(f"/v1/audiences/{audience_id}")
    refresh = client.get(f"/v1/audiences/{audience_id}/status")

    def render() -> Group:
        parts: list[RenderableType] = [fields(audience, SHOW_COLUMNS, title=audience["name"])]
        progress = refresh.get("progress")
        parts.append(
            Text(
                f"refresh: {refresh.get('status')}"
                + (f" ({progress:.0%})" if isinstance(progress, int | float) else "")
                + f", last {refresh.get('last_refreshed_at') or '-'}"
                + f", next {refresh.get('next_refresh_at') or '-'}"
            )
        )
        if refresh.get("error"):
            parts.append(Text(f"error: {refresh['error']}", style="red"))
        return Group(*parts)

    session.output.show({**audience, "refresh": refresh}, render)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Audience name.")],
    criteria: Annotated[
        str | None,
        typer.Option(
            help='The rule, e.g. "Users with plan=premium AND last_active within 7 days".'
        ),
    ] = None,
    kind: Annotated[Kind, typer.Option(help="dynamic (a rule) or static (a list).")] = Kind.dynamic,
    audience_type: Annotated[AudienceType, typer.Option("--type")] = AudienceType.events,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an audience from criteria (dynamic) or an empty list (static)."""
    session = session_of(ctx)
    body: dict[str, Any] = {"name": name, "kind": kind.value, "type": audience_type.value}
    for field, value in (("criteria", criteria), ("description", description)):
        if value is not None:
            body[field] = value
    if session.project is not None:
        body["project_id"] = session.project
    created = session.client().post("/v1/audiences", body)
    session.output.show(created, lambda: fields(created, SHOW_COLUMNS, title="Created"))


@app.command("members")
def members(
    ctx: typer.Context,
    audience_id: Annotated[str, typer.Argument(help="Audience ID.")],
    search: Annotated[str | None, typer.Option(help="Match user id, email or name.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many members.")] = 50,
    after: Annotated[str | None, typer.Option(help="Continue from this cursor.")] = None,
) -> None:
    """Members of an audience, in user id order, with their contact traits."""
    session = session_of(ctx)
    items, more = pages(
        session, f"/v1/audiences/{audience_id}/members", limit, search=search, after=after
    )
    session.output.show(
        {"items": items, "next_cursor": more},
        lambda: table(items, MEMBER_COLUMNS, title=f"Members of {audience_id}"),
    )
    if more:
        session.output.note(f"More members: --after {more}")


@app.command("export")
def export(
    ctx: typer.Context,
    audience_id: Annotated[str, typer.Argument(help="Audience ID.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: <export id>.<format>)."),
    ] = None,
    file_format: Annotated[Format, typer.Option("--format")] = Format.csv,
    columns: Annotated[
        str | None, typer.Option(help='Columns, e.g. "user_id, email, metadata.plan".')
    ] = None,
    include_traits: Annotated[bool, typer.Option(help="Add every trait (jsonl).")] = False,
) -> None:
    """Unload the members to a file: start the export, follow it, download it."""
    session = session_of(ctx)
    client = session.client()
    request: dict[str, Any] = {"format": file_format.value, "include_traits": include_traits}
    if columns is not None:
        request["columns"] = columns
    started = client.post(f"/v1/audiences/{audience_id}/export", request)
    export_id = started["export_id"]
    finished = follow(
        session,
        f"/v1/exports/{export_id}",
        f"export {export_id}",
        done=lambda r: int(r.get("row_count") or 0),
        total=lambda r: r.get("rows_total"),
    )
    destination = output or Path(f"{export_id}.{file_format.value}")
    with session.output.transferring() as progress:
        task = progress.add_task(f"download {destination.name}", total=finished.get("bytes"))

        def advanced(written: int, total: int | None) -> None:
            progress.update(task, completed=written, total=total)

        size = client.download(f"/v1/exports/{export_id}/download", destination, advanced)
    result = {**finished, "file": str(destination), "bytes": size}
    session.output.show(
        result, lambda: f"Wrote {finished.get('row_count')} rows ({size} bytes) to {destination}"
    )
