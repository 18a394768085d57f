"""`audience import csv`: upload a CSV to a static list and follow the import row by row."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from audience_cli.commands import session_of
from audience_cli.jobs import follow
from audience_cli.output import table

app = typer.Typer(no_args_is_help=True)


@app.command("csv")
def import_csv(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")
    ],
    audience: Annotated[str, typer.Option("--audience", "-a", help="Static audience ID.")],
    wait: Annotated[bool, typer.Option(help="Follow the import until it finishes.")] = True,
) -> None:
    """Upload FILE (header naming user_id, external_id, email or phone) into a static list."""
    session = session_of(ctx)
    client = session.client()
    with session.output.transferring() as progress:
        task = progress.add_task(f"upload {file.name}", total=file.stat().st_size)
        started = client.upload_csv(
            f"/v1/audiences/{audience}/import",
            file,
            lambda sent: progress.advance(task, sent),
        )
    import_id = started["import_id"]
    if not wait:
        session.output.show(started, lambda: f"Import {import_id} queued.")
        return
    finished = follow(
        session,
        f"/v1/audiences/{audience}/imports/{import_id}",
        f"import {import_id}",
        done=lambda r: int(r.get("rows_imported") or 0) + int(r.get("rows_failed") or 0),
        total=lambda r: r.get("rows_total"),
    )

    def render() -> Group:
        parts: list[RenderableType] = [
            Text(
                f"Imported {finished['rows_imported']} of {finished['rows_total']} rows"
                f" into {audience}; {finished['rows_failed']} rejected."
            )
        ]
        if finished.get("errors"):
            parts.append(
                table(finished["errors"], [("row", "Row"), ("message", "Why")], title="Rejected")
            )
        return Group(*parts)

    session.output.show(finished, render)
