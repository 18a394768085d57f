"""Everything the CLI prints: tables and values on stdout, progress and errors on stderr."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from audience_cli.errors import CliError

Column = tuple[str, str]  # (key in the API's item, header)


@dataclass
class Output:
    """Rich for people, plain JSON for scripts (`--json`): same data, never both."""

    as_json: bool = False
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))

    def show(self, payload: Any, render: Callable[[], RenderableType | str]) -> None:
        if self.as_json:
            self.out.print_json(json.dumps(payload, default=str), indent=2)
        else:
            self.out.print(render())

    def note(self, message: str) -> None:
        """A human aside (hints, paths); silent under --json so stdout stays one document."""
        if not self.as_json:
            self.err.print(message)

    def failure(self, failure: CliError) -> None:
        if self.as_json:
            self.err.print_json(json.dumps({"error": failure.as_dict()}, default=str))
        else:
            # One line, markup off: API messages may contain brackets.
            self.err.print(
                f"error: {failure.code}: {failure.message}", markup=False, highlight=False
            )

    def counting(self) -> Progress:
        """A bar for rows or records: n/total, percent, elapsed."""
        return Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=self.err,
            disable=self.as_json,
            transient=False,
        )

    def transferring(self) -> Progress:
        """A bar for bytes: size, speed."""
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.err,
            disable=self.as_json,
        )


def table(
    items: Sequence[dict[str, Any]], columns: Sequence[Column], title: str | None = None
) -> Table:
    grid = Table(title=_plain(title), show_lines=False, header_style="bold")
    for _, header in columns:
        grid.add_column(header, overflow="fold")
    for item in items:
        grid.add_row(*(cell(item.get(key)) for key, _ in columns))
    return grid


def fields(item: dict[str, Any], columns: Sequence[Column], title: str | None = None) -> Table:
    """One record as a two-column table of label and value."""
    grid = Table(title=_plain(title), show_header=False, box=None, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, label in columns:
        grid.add_row(label, cell(item.get(key)))
    return grid


def cell(value: Any) -> Text:
    """Plain text, never markup: names and rules may contain brackets."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, default=str))
    return Text(str(value))


def _plain(title: str | None) -> Text | None:
    return None if title is None else Text(title, style="bold")
