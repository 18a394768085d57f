"""Subcommands of `audience`, one module per group."""

import typer

from audience_cli.session import Session


def session_of(ctx: typer.Context) -> Session:
    return ctx.ensure_object(Session)
