"""`audience projects`: the projects an organization key can reach."""

from typing import Annotated

import typer

from audience_cli.commands import session_of
from audience_cli.output import fields, table

app = typer.Typer(no_args_is_help=True)

COLUMNS = [("id", "ID"), ("name", "Name"), ("created_at", "Created")]


@app.command("list")
def list_projects(ctx: typer.Context) -> None:
    """Every project of your organization."""
    session = session_of(ctx)
    body = session.client().get("/v1/projects")
    session.output.show(body, lambda: table(body["items"], COLUMNS, title="Projects"))


@app.command("create")
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Project name.")]) -> None:
    """Create a project (needs an organization key)."""
    session = session_of(ctx)
    body = session.client().post("/v1/projects", {"name": name})
    session.output.show(body, lambda: fields(body, COLUMNS))
