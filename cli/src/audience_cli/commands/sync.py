"""`audience sync klaviyo`: connect Klaviyo, import its lists or resync one, follow the runs."""

from typing import Annotated, Any

import typer

from audience_cli.commands import session_of
from audience_cli.jobs import follow
from audience_cli.output import table

app = typer.Typer(no_args_is_help=True)

RUN_COLUMNS = [
    ("audience_id", "Audience"),
    ("name", "Name"),
    ("status", "Status"),
    ("pages", "Pages"),
    ("profiles", "Profiles"),
    ("entered", "Entered"),
    ("exited", "Exited"),
]


@app.command("klaviyo")
def klaviyo(
    ctx: typer.Context,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="KLAVIYO_API_KEY",
            help="Klaviyo private key: connect (or replace) the integration first.",
            show_default=False,
        ),
    ] = None,
    lists: Annotated[
        list[str] | None,
        typer.Option("--list", help="Klaviyo list ID to import (repeat; default: every list)."),
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option(help="Resync this synced audience instead of importing lists."),
    ] = None,
    incremental: Annotated[
        bool, typer.Option(help="With --audience: only members who joined since the last run.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the runs until they finish.")] = True,
) -> None:
    """Import Klaviyo lists as synced audiences (or resync one) and show each run's progress."""
    session = session_of(ctx)
    client = session.client()
    if api_key is not None:
        connected = client.post("/v1/integrations/klaviyo", {"api_key": api_key})
        session.output.note(f"Klaviyo connected (key ...{connected.get('key_last4')}).")
    targets: list[dict[str, Any]] = []
    if audience is not None:
        started = client.post(
            f"/v1/audiences/{audience}/sync", {"mode": "incremental" if incremental else "full"}
        )
        resource = client.get(f"/v1/audiences/{audience}")
        targets.append(
            {"id": audience, "name": resource["name"], "run_path": f"syncs/{started['run_id']}"}
        )
    else:
        body = {"list_ids": lists} if lists else {}
        imported = client.post("/v1/audiences/import/klaviyo", body)
        targets = [{**item, "run_path": "sync"} for item in imported["items"]]
    runs = []
    for target in targets:
        path = f"/v1/audiences/{target['id']}/{target['run_path']}"
        if wait:
            run = follow(
                session,
                path,
                f"sync {target['name']}",
                done=lambda r: int(r.get("profiles") or 0),
                total=lambda r: None,  # Klaviyo does not say how many profiles a list holds
                record=lambda body: body.get("run"),
            )
        else:
            run = client.get(path).get("run") or {"status": "queued"}
        runs.append({"audience_id": target["id"], "name": target["name"], **run})
    session.output.show({"items": runs}, lambda: table(runs, RUN_COLUMNS, title="Klaviyo syncs"))
