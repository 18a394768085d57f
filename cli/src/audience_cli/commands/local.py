"""`audience up|down|status|bench`: the deploy/local scripts and bench/ of the checkout."""

import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer

from audience_cli.commands import session_of
from audience_cli.errors import CliError
from audience_cli.output import table
from audience_cli.settings import checkout_root, service_url

BENCHMARKS = {"rules": "bench.bench_rules", "evaluator": "bench.bench_evaluator"}


class Benchmark(StrEnum):
    rules = "rules"
    evaluator = "evaluator"
    all = "all"


def _root() -> Path:
    root = checkout_root()
    if root is None:
        raise CliError(
            "no_checkout",
            "cannot find the Audiences checkout (deploy/local/up.sh); run from it or set "
            "AUDIENCES_ROOT",
        )
    return root


def _script(name: str, *args: str) -> None:
    """Run a deploy/local script with our terminal; its exit code becomes ours."""
    # Our own scripts, by fixed name, no shell.
    code = subprocess.call([str(_root() / "deploy" / "local" / name), *args])  # noqa: S603
    if code != 0:
        raise typer.Exit(code)


def up() -> None:
    _script("up.sh")


def down() -> None:
    _script("down.sh")


def _script_lines(name: str) -> dict[str, str]:
    """`name: state` lines of a script's `status` into a mapping."""
    result = subprocess.run(  # noqa: S603 (our own script, no shell)
        [str(_root() / "deploy" / "local" / name), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    states = {}
    for line in result.stdout.splitlines():
        component, _, state = line.partition(":")
        if state:
            states[component.strip()] = state.strip()
    return states


def _readiness(url: str) -> str:
    try:
        response = httpx.get(f"{url}/readyz", timeout=3)
    except httpx.HTTPError:
        return "unreachable"
    return "ready" if response.status_code == 200 else f"not ready ({response.status_code})"


def status(ctx: typer.Context) -> None:
    session = session_of(ctx)
    processes = {**_script_lines("infra.sh"), **_script_lines("services.sh")}
    rows = [
        {"component": name, "process": processes.get(name, "unknown"), "health": "-", "url": "-"}
        for name in ("kafka", "store")
    ]
    for name in ("api", "evaluator", "sync"):
        url = session.url if name == "api" else service_url(name)
        rows.append(
            {
                "component": name,
                "process": processes.get(name, "unknown"),
                "health": _readiness(url),
                "url": url,
            }
        )
    columns = [
        ("component", "Component"),
        ("process", "Process"),
        ("health", "Health"),
        ("url", "URL"),
    ]
    session.output.show({"items": rows}, lambda: table(rows, columns, title="Audiences"))
    if any(row["health"] not in ("ready", "-") for row in rows):
        raise typer.Exit(1)


def bench(
    which: Annotated[Benchmark, typer.Argument(help="Which benchmark.")] = Benchmark.all,
) -> None:
    root = _root()
    chosen = list(BENCHMARKS) if which is Benchmark.all else [which.value]
    for name in chosen:
        code = subprocess.call([sys.executable, "-m", BENCHMARKS[name]], cwd=root)  # noqa: S603
        if code != 0:
            raise CliError("bench_failed", f"{name} benchmark exited with {code}")
