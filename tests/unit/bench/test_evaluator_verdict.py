"""The evaluator benchmark's verdict line: each target's figure, the target, met or missed."""

from rich.console import Console

from bench.bench_evaluator import verdict


def result(ratio: float, p99_ms: float, raw_store: float) -> dict[str, object]:
    return {
        "ratio_to_slowest_raw": ratio,
        "target_ratio": 0.4,
        "p99_ms": p99_ms,
        "target_p99_ms": 500,
        "offered_per_s": 2000,
        "offered_share_of_raw_store": round(2000 / raw_store, 3),
        "targets_met": {"ratio": ratio >= 0.4, "p99": p99_ms <= 500},
    }


def plain(markup: str) -> str:
    console = Console(width=200, no_color=True)
    with console.capture() as captured:
        console.print(markup)
    return captured.get()


def test_verdict__both_met__says_so_with_the_machine_context() -> None:
    text = plain(verdict(result(0.97, 96.4, 6214)))

    assert "throughput: 0.97 of the slower raw limit (target ≥ 0.4) met" in text
    assert "p99 96 ms at 2,000 events/s (target ≤ 500 ms) met" in text
    assert "32% of this machine's raw store limit" in text


def test_verdict__latency_missed__says_missed_for_that_target_only() -> None:
    text = plain(verdict(result(0.98, 609.0, 3335)))

    assert "(target ≥ 0.4) met" in text
    assert "(target ≤ 500 ms) missed" in text
    assert "60% of this machine's raw store limit" in text
