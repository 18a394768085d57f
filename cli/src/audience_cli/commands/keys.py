"""`audience keys`: create, list and revoke API keys."""

from enum import StrEnum
from typing import Annotated

import typer

from audience_cli.commands import session_of
from audience_cli.output import fields, table

app = typer.Typer(no_args_is_help=True)


class Scope(StrEnum):
    admin = "admin"
    read = "read"


COLUMNS = [
    ("id", "ID"),
    ("prefix", "Prefix"),
    ("name", "Name"),
    ("scope", "Scope"),
    ("project_id", "Project"),
    ("created_at", "Created"),
    ("revoked_at", "Revoked"),
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    scope: Annotated[Scope, typer.Option(help="admin writes; read only reads.")] = Scope.admin,
    project: Annotated[
        str | None,
        typer.Option("--project", help="Project of the key (default: the global --project)."),
    ] = None,
) -> None:
    """Create a key; the secret is shown this once."""
    session = session_of(ctx)
    body = session.client().post(
        "/v1/keys",
        {"project_id": project or session.project, "scope": scope.value, "name": name},
    )
    session.output.show(body, lambda: fields(body, [("key", "Key"), *COLUMNS[:5]]))
    session.output.note("[yellow]Store the key now: it is never shown again.[/]")


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """Keys you can see (prefixes only; secrets are stored hashed)."""
    session = session_of(ctx)
    body = session.client().get("/v1/keys")
    session.output.show(body, lambda: table(body["items"], COLUMNS, title="API keys"))


@app.command("revoke")
def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key ID.")]) -> None:
    """Revoke a key; requests with it are refused from now on."""
    session = session_of(ctx)
    session.client().delete(f"/v1/keys/{key_id}")
    session.output.show({"revoked": key_id}, lambda: f"Revoked {key_id}.")
