"""Benchmark: one profile update against 100 audiences, compiled predicate vs the naive tree walk."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from audience_shared.profile import encode_key
from audience_shared.rules import (
    Evaluation,
    Group,
    compile_predicate,
    evaluate_naive,
    parse_criteria,
    rule_from_filter,
    rule_from_filters,
    rule_from_properties,
)

# Run with `make bench-rules` (or `uv run python bench/bench_rules.py`). Prints a table and writes
# .local/bench/rules.json. Not a timed test: the numbers depend on the machine; the ratio is the
# point (target: compiled at least 5x cheaper than the naive walk, both measured in this run).

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / ".local" / "bench" / "rules.json"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
AUDIENCES = 100
TARGET_RATIO = 5.0

PLANS = ["premium", "pro", "free", "trial", "enterprise"]
COUNTRIES = ["US", "CA", "UK", "DE", "FR", "BR"]
EVENTS = ["purchase", "app_open", "add_to_cart", "signup", "page_view", "share"]


def seed_audiences() -> list[tuple[str, Group]]:
    """100 rules in the shapes and sizes of the seed examples, with varied values."""
    rules: list[tuple[str, Group]] = []
    index = 0
    while len(rules) < AUDIENCES:
        plan = PLANS[index % len(PLANS)]
        country = COUNTRIES[index % len(COUNTRIES)]
        event = EVENTS[index % len(EVENTS)]
        days = (7, 14, 30)[index % 3]
        shapes: list[tuple[str, Group]] = [
            (
                "criteria",
                parse_criteria(f"Users with plan={plan} AND last_active within {days} days"),
            ),
            ("criteria", parse_criteria(f"Users who completed {event} in the last {days} days")),
            ("criteria", parse_criteria("Users with email AND NOT subscribed to newsletter")),
            ("criteria", parse_criteria(f"Users from country={country} AND plan={plan}")),
            (
                "criteria",
                parse_criteria(f"Users who triggered event={event} more than {index % 12} times"),
            ),
            ("criteria", parse_criteria(f"Users with signup_date before 2024-0{1 + index % 5}-01")),
            (
                "filters",
                rule_from_filters(
                    [
                        {"field": "country", "operator": "in", "value": [country, "US"]},
                        {"field": "event_count", "operator": "gte", "value": 10 + index},
                        {
                            "field": "plan",
                            "operator": "is",
                            "value": plan,
                            "conjunction": "or",
                        },
                    ]
                ),
            ),
            ("properties", rule_from_properties({"plan": [plan, "pro"], "country": [country]})),
            (
                "filter",
                rule_from_filter(
                    {
                        "match": "all",
                        "rules": [
                            {
                                "match": "any",
                                "rules": [
                                    {
                                        "type": "event",
                                        "event": event,
                                        "count": {"operator": "gte", "value": 2},
                                        "window": {"last": f"{days}d"},
                                    },
                                    {
                                        "type": "intent",
                                        "topics": ["running", "travel"],
                                        "min_score": 0.5,
                                        "days": 7,
                                    },
                                ],
                            },
                            {
                                "type": "trait",
                                "field": "metadata.tier",
                                "operator": "in",
                                "value": ["gold", "silver"],
                            },
                        ],
                    }
                ),
            ),
            (
                "criteria",
                parse_criteria(
                    f"Users with (plan = {plan} OR metadata.tier = gold) AND "
                    f"who did not perform purchase in the last {days} days"
                ),
            ),
        ]
        rules.append(shapes[index % len(shapes)])
        index += 1
    return rules


def sample_profile() -> dict[str, Any]:
    """A busy user: traits, a few hundred events over a year, intents and memberships."""
    events: dict[str, Any] = {}
    for position, name in enumerate(EVENTS):
        recent = [NOW - timedelta(hours=7 * step + position) for step in range(60 + 20 * position)]
        events[encode_key(name)] = {
            "count": len(recent) + 40,
            "last_at": recent[0],
            "recent": recent,
        }
    return {
        "_id": "proj_1/user_42",
        "project_id": "proj_1",
        "user_id": "user_42",
        "version": 17,
        "traits": {
            "plan": "premium",
            "country": "US",
            "email": "user@example.com",
            "subscriptions": ["product_updates"],
            "signup_date": datetime(2023, 11, 5, tzinfo=UTC),
            "metadata": {"tier": "gold", "company": "Acme"},
        },
        "first_seen": NOW - timedelta(days=200),
        "last_seen": NOW - timedelta(hours=2),
        "event_count": sum(entry["count"] for entry in events.values()),
        "events": events,
        "counters": {},
        "intents": {
            "running": [
                {"at": NOW - timedelta(days=2), "score": 0.4},
                {"at": NOW - timedelta(days=5), "score": 0.7},
            ]
        },
        "audiences": ["aud_1", "aud_7"],
    }


def measure(run: Callable[[], object], rounds: int, repeat: int) -> list[float]:
    """Seconds per call of `run`, one sample per round."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeat):
            run()
        samples.append((time.perf_counter() - started) / repeat)
    return samples


def main() -> int:
    audiences = seed_audiences()
    rules = [rule for _, rule in audiences]
    profile = sample_profile()

    compile_started = time.perf_counter()
    compiled = [compile_predicate(rule) for rule in rules]
    compile_seconds = time.perf_counter() - compile_started

    def run_compiled() -> list[Evaluation]:
        return [predicate.evaluate(profile, NOW) for predicate in compiled]

    def run_naive() -> list[Evaluation]:
        return [evaluate_naive(rule, profile, NOW) for rule in rules]

    # Both executors must give the same answers before their speed means anything.
    answers = run_compiled()
    if answers != run_naive():
        raise SystemExit("compiled and naive evaluators disagree; fix that before timing them")
    matched = sum(evaluation.matched for evaluation in answers)

    run_compiled()
    run_naive()
    compiled_samples = measure(run_compiled, rounds=7, repeat=300)
    naive_samples = measure(run_naive, rounds=7, repeat=60)
    compiled_cost = statistics.median(compiled_samples)
    naive_cost = statistics.median(naive_samples)
    ratio = naive_cost / compiled_cost

    table = Table(title=f"One profile update against {len(rules)} audiences")
    table.add_column("executor")
    table.add_column("µs/profile", justify="right")
    table.add_column("µs/audience", justify="right")
    table.add_column("profiles/s", justify="right")
    table.add_column("speed-up", justify="right")
    for name, cost in (("compiled", compiled_cost), ("naive walk", naive_cost)):
        table.add_row(
            name,
            f"{cost * 1e6:,.1f}",
            f"{cost * 1e6 / len(rules):,.2f}",
            f"{1 / cost:,.0f}",
            f"{naive_cost / cost:.1f}x",
        )
    console = Console()
    console.print(table)
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    console.print(
        f"ratio {ratio:.1f}x ({verdict} the {TARGET_RATIO:.0f}x target); "
        f"{matched}/{len(rules)} audiences match; compiling all took {compile_seconds * 1e3:.1f} ms"
    )

    shapes: dict[str, int] = {}
    for shape, _ in audiences:
        shapes[shape] = shapes.get(shape, 0) + 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(
        json.dumps(
            {
                "benchmark": "rules",
                "audiences": len(rules),
                "input_forms": shapes,
                "matched": matched,
                "compiled_us_per_profile": round(compiled_cost * 1e6, 2),
                "naive_us_per_profile": round(naive_cost * 1e6, 2),
                "compiled_samples_us": [round(sample * 1e6, 2) for sample in compiled_samples],
                "naive_samples_us": [round(sample * 1e6, 2) for sample in naive_samples],
                "ratio": round(ratio, 2),
                "target_ratio": TARGET_RATIO,
                "meets_target": ratio >= TARGET_RATIO,
                "compile_ms_all": round(compile_seconds * 1e3, 2),
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "measured_at": datetime.now(UTC).isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
