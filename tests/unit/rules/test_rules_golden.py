"""Golden cases: both in-process executors give the recorded answer and next change."""

import pytest

from audience_shared.rules import compile_predicate, evaluate_naive
from tests.unit.rules.golden import GoldenCase, load_golden_cases

CASES = load_golden_cases()


def test_golden_cases__cover_the_documented_surface() -> None:
    assert len(CASES) >= 40
    assert any(case.next_change_at is not None for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_compiled_predicate__matches_golden_case(case: GoldenCase) -> None:
    evaluation = compile_predicate(case.rule).evaluate(case.profile, case.now)

    assert evaluation.matched is case.matched
    assert evaluation.next_change_at == case.next_change_at


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_naive_walk__matches_golden_case(case: GoldenCase) -> None:
    evaluation = evaluate_naive(case.rule, case.profile, case.now)

    assert evaluation.matched is case.matched
    assert evaluation.next_change_at == case.next_change_at
