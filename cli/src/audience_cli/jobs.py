"""Following long work (imports, exports, syncs) by polling its record behind a progress bar."""

import time
from collections.abc import Callable
from typing import Any

from audience_cli.errors import CliError
from audience_cli.session import Session

FINISHED = ("completed", "failed")


def follow(
    session: Session,
    path: str,
    label: str,
    done: Callable[[dict[str, Any]], int],
    total: Callable[[dict[str, Any]], int | None],
    record: Callable[[Any], dict[str, Any] | None] = lambda body: body,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Poll `path` until its record completes; a failed record raises its error code."""
    client = session.client()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with session.output.counting() as progress:
        task = progress.add_task(label, total=None)
        while True:
            current = record(client.get(path)) or {}
            progress.update(task, completed=done(current), total=total(current))
            status = current.get("status")
            if status in FINISHED:
                if status == "completed":
                    # Unknown totals (a spinner until now) end as a full bar.
                    finished = done(current)
                    progress.update(task, completed=finished, total=total(current) or finished)
                break
            if deadline is not None and time.monotonic() > deadline:
                raise CliError("timeout", f"{label} still {status} after {timeout_s:.0f}s")
            time.sleep(session.poll_interval_s)
    if current.get("status") == "failed":
        error = current.get("error") or {}
        raise CliError(
            str(error.get("code", "failed")),
            f"{label} failed: {error.get('message', 'no reason given')}",
            current,
        )
    return current
