"""Independent awaitables run at once: the first failure cancels the rest and is raised as is."""

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def all_at_once(steps: Iterable[Awaitable[T]]) -> list[T]:
    """The steps' results, in order. When one fails, the others are cancelled (and awaited) and
    its error raised as itself, not in a group: the retries tell outages by the exception's
    type."""
    running = [asyncio.ensure_future(step) for step in steps]
    try:
        return list(await asyncio.gather(*running))
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
