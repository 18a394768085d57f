"""all_at_once: results in order; the first failure cancels the rest and is raised as itself."""

import asyncio

import pytest

from audience_shared.tasks import all_at_once


async def test_all_at_once__results_in_the_steps_order() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    assert await all_at_once([after(0.02, 1), after(0, 2), after(0.01, 3)]) == [1, 2, 3]


async def test_all_at_once__a_failure__raised_as_itself_and_the_others_cancelled() -> None:
    cancelled: list[str] = []

    async def waits_forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("store gone")

    with pytest.raises(ConnectionError, match="store gone"):
        await all_at_once([waits_forever("a"), fails(), waits_forever("b")])
    assert sorted(cancelled) == ["a", "b"]
