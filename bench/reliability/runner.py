"""make reliability: every scenario against a fresh broker and store; a table and a JSON report.

Usage: python -m bench.reliability.runner [--quick] [--only 1,2,5]
"""

import argparse
import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from audience_shared.kafka import ensure_topics
from bench.infra import ROOT, fresh_infrastructure
from bench.reliability import faults, inputs, load, security
from bench.reliability.harness import Harness, ScenarioResult, ServiceProcess, Sizes

# Wide enough for the table when the output is a file or a pipe (make, CI logs).
console = Console(width=max(Console().width, 180))
OUT = ROOT / ".local" / "bench" / "reliability.json"
Scenario = Callable[[Harness, Sizes], Awaitable[ScenarioResult]]

SCENARIOS: dict[int, tuple[str, Scenario]] = {
    1: ("1 evaluator kill -9 x3", faults.evaluator_killed),
    2: ("2 broker stopped", faults.broker_stopped),
    3: ("3 store stopped", faults.store_stopped),
    4: ("4 network faults", faults.network_faults),
    5: ("5 poison messages", inputs.poison_messages),
    6: ("6 duplicates + reordering", inputs.duplicates_reordered),
    7: ("7 rebalance", faults.rebalance),
    8: ("8 API under load", load.api_under_load),
    9: ("9 bad input", partial(inputs.bad_input, openapi_fuzz=True)),
    10: ("10 security", security.security),
}


def service_env(env: dict[str, str]) -> dict[str, str]:
    database = f"reliability_{secrets.token_hex(3)}"
    return {
        **env,
        "AUDIENCES_MONGO_DATABASE": database,
        "AUDIENCES_BOOTSTRAP_API_KEY": f"sk_rel_{secrets.token_hex(16)}",
        "AUDIENCES_CONSUMER_GROUP": f"evaluator-{database}",
        "AUDIENCES_SYNC_CONSUMER_GROUP": f"sync-{database}",
        "AUDIENCES_SWEEP_INTERVAL_S": "1",
        "AUDIENCES_LOG_LEVEL": "WARNING",
    }


async def run(chosen: list[int], sizes: Sizes) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    with fresh_infrastructure("reliability", 19692, 17627) as env:
        for _ in range(90):  # the broker accepts connections a moment after it listens
            try:
                await ensure_topics(env["AUDIENCES_KAFKA_BOOTSTRAP"])
                break
            except KafkaError:
                await asyncio.sleep(1)
        infra_env = {
            k: v
            for k, v in env.items()
            if k not in ("AUDIENCES_KAFKA_BOOTSTRAP", "AUDIENCES_MONGO_URL")
        }
        services = service_env(env)
        log_dir = ROOT / ".local" / "bench" / "reliability-logs"
        api = ServiceProcess("api", "audience_api.main", services, log_dir)
        h = Harness(
            env=services,
            infra_env=infra_env,
            api_url=api.url,
            admin_key=services["AUDIENCES_BOOTSTRAP_API_KEY"],
            log_dir=log_dir,
        )
        h.evaluators.append(h.evaluator("evaluator"))
        try:
            api.start()
            h.evaluators[0].start()
            for number in chosen:
                name, scenario = SCENARIOS[number]
                console.print(f"[bold]scenario {name}[/bold] …")
                started = time.monotonic()
                try:
                    result = await scenario(h, sizes)
                except Exception as exc:
                    console.print_exception()
                    result = ScenarioResult(name, 0, 0, 0, 0, 0, None, [f"crashed: {exc!r}"])
                result.notes["wall_s"] = round(time.monotonic() - started, 1)
                results.append(result)
                console.print(table([result]))
        finally:
            for evaluator in h.evaluators:
                evaluator.stop()
            api.stop()
    return results


def table(results: list[ScenarioResult]) -> Table:
    out = Table(title="Reliability")
    for column in (
        "scenario",
        "events sent",
        "expected",
        "actual",
        "lost",
        "duplicated",
        "recover (s)",
        "passed",
        "notes",
    ):
        out.add_column(column)
    for r in results:
        notes = "; ".join(r.violations) or ", ".join(
            f"{k}={v}" for k, v in r.notes.items() if k != "wall_s"
        )
        out.add_row(
            r.scenario,
            str(r.events_sent),
            str(r.expected),
            str(r.actual),
            str(r.lost),
            str(r.duplicated),
            "-" if r.recovery_s is None else f"{r.recovery_s:.1f}",
            "[green]yes[/green]" if r.passed else "[red]NO[/red]",
            notes[:400],
        )
    return out


def write(results: list[ScenarioResult], quick: bool) -> None:
    """Merge into the report, so a run of some scenarios keeps the others' latest figures."""
    previous: dict[str, Any] = {}
    if OUT.exists():
        previous = {s["scenario"]: s for s in json.loads(OUT.read_text()).get("scenarios", [])}
    for r in results:
        previous[r.scenario] = r.as_json() | {"quick": quick}
    ordered = sorted(previous.values(), key=lambda s: int(s["scenario"].split()[0]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"scenarios": ordered}, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller streams and phases")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers")
    args = parser.parse_args()
    chosen = [int(n) for n in args.only.split(",") if n] or list(SCENARIOS)
    results = asyncio.run(run(chosen, Sizes.quick() if args.quick else Sizes()))
    console.print(table(results))
    write(results, args.quick)
    console.print(f"wrote {OUT}")
    if not all(r.passed for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
