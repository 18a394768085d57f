"""The `audience` command: global options, the command groups, one-line errors."""

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from audience_cli.commands import audiences, imports, keys, local, projects, sync
from audience_cli.errors import CliError
from audience_cli.output import Output
from audience_cli.session import Session
from audience_cli.settings import DEFAULT_URL, checkout_root, demo_key


class ReportingGroup(TyperGroup):
    """Turns a `CliError` anywhere below into one line on stderr and exit code 1."""

    # Typed Any: the Context here is typer's vendored click's, which typer does not export.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as failure:
            session = ctx.find_object(Session)
            (session.output if session else Output()).failure(failure)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=ReportingGroup,
    name="audience",
    help="Run Audiences locally and drive its API: keys, audiences, imports, exports, syncs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="AUDIENCES_API_URL", help="The api's base URL.")
    ] = DEFAULT_URL,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="AUDIENCES_API_KEY",
            help="API key; defaults to the demo key `make up` printed.",
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            envvar="AUDIENCES_PROJECT_ID",
            help="Project to act on (needed with an organization key).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")
    ] = False,
) -> None:
    session = ctx.ensure_object(Session)
    session.url = url
    session.key = key or demo_key(checkout_root())
    session.project = project
    session.output.as_json = as_json
    ctx.call_on_close(session.close)


app.command("up", help="Install, provision and start everything; print the URL and demo key.")(
    local.up
)
app.command("down", help="Stop everything `audience up` started.")(local.down)
app.command("status", help="The broker, the store and each service: running and ready?")(
    local.status
)
app.command("bench", help="Run the benchmarks in bench/ (tables, JSON under .local/bench/).")(
    local.bench
)
app.add_typer(projects.app, name="projects", help="Projects of your organization.")
app.add_typer(keys.app, name="keys", help="API keys: create, list, revoke.")
app.add_typer(
    audiences.app, name="audiences", help="Audiences: list, show, create, members, export."
)
app.add_typer(imports.app, name="import", help="Import members into static lists.")
app.add_typer(sync.app, name="sync", help="Pull lists from external sources.")


def run() -> None:
    app()
