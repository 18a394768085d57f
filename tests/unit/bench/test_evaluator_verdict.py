"""The evaluator benchmark's verdict: each target's figure, the target, met or missed."""

from rich.console import Console

from bench.bench_evaluator import targets_met, verdict


def result(ratio: float, p99_ms: float, raw_store: float) -> dict[str, object]:
    return {
        "ratio_to_slowest_raw": ratio,
        "target_ratio": 0.4,
        "p99_ms": p99_ms,
        "target_p99_ms": 500,
        "offered_per_s": 2000,
        "offered_share_of_raw_store": round(2000 / raw_store, 3),
        "targets_met": targets_met(ratio, p99_ms),
    }


def plain(markup: str) -> str:
    console = Console(width=200, no_color=True)
    with console.capture() as captured:
        console.print(markup)
    return captured.get()


def test_targets_met__at_the_targets__met__past_them__missed() -> None:
    assert targets_met(0.4, 500.0) == {"ratio": True, "p99": True}
    assert targets_met(0.399, 500.1) == {"ratio": False, "p99": False}


def test_verdict__both_met__says_so_with_the_machine_context() -> None:
    text = plain(verdict(result(0.97, 96.4, 6214)))

    assert "throughput: 0.97 of the slower raw limit (target ≥ 0.4) met" in text
    assert "p99 96.4 ms at 2,000 events/s (target ≤ 500 ms) met" in text
    assert "32% of this machine's raw store limit" in text


def test_verdict__latency_missed__says_missed_for_that_target_only() -> None:
    text = plain(verdict(result(0.98, 609.0, 3335)))

    assert "(target ≥ 0.4) met" in text
    assert "p99 609.0 ms at 2,000 events/s (target ≤ 500 ms) missed" in text
    assert "60% of this machine's raw store limit" in text
