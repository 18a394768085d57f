"""A rebalance reaches the evaluator: each process hears of the partitions it is given (the
sweeper then scans the store for due times the previous owner kept)."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import ServiceProcess, Stack, free_port

pytestmark = pytest.mark.integration


def _assignments(log_path: Path) -> int:
    """How many partition assignments the evaluator writing this log has logged."""
    return log_path.read_text().count('"event": "partitions.assigned"')


async def _wait_for(condition: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {condition}")
        await asyncio.sleep(0.5)


async def test_second_evaluator_joins__both_are_given_partitions(stack: Stack) -> None:
    first = stack.services["evaluator"]
    await _wait_for("the first evaluator got partitions", lambda: _assignments(first.log_path) > 0)
    before = _assignments(first.log_path)
    second = ServiceProcess("evaluator-rebalance", free_port(), stack.env)
    second.start()
    try:
        await _wait_for(
            "the second evaluator got partitions", lambda: _assignments(second.log_path) > 0
        )
        await _wait_for(
            "the first evaluator was assigned again after the rebalance",
            lambda: _assignments(first.log_path) > before,
        )
    finally:
        second.stop()
