"""Python's garbage collector held to short pauses: between batches, survivors frozen out of it."""

import gc
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger()


class BatchCollector:
    """Runs the cyclic garbage collector between batches, over what the last batch left.

    The profile cache keeps hundreds of thousands of container objects alive, and a collection
    walks every object of the generations it collects while every event in the process waits.
    With the thresholds alone, the objects a batch leaves behind (its profiles, now cached) piled
    up in the young generations until a second-generation collection walked a million of them:
    0.2-0.4 s, the stalls that decided the benchmark's p99. So after each batch the young
    generations are collected (what one batch left: a few milliseconds), and what survives is
    frozen, i.e. moved out of every later collection. Frozen objects are still freed by reference
    counting when dropped; only a reference cycle among them outlives that, so the whole heap is
    collected once every `full_every_s`, the one long pause left.
    """

    def __init__(self, full_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()

    def after_batch(self) -> None:
        gc.collect(1)
        if self._clock() - self._last_full >= self._full_every_s:
            self.collect_all()
        gc.freeze()

    def collect_all(self) -> None:
        """Collect the whole heap, frozen objects too (they stay unfrozen until the next batch)."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        self._last_full = self._clock()
        log.info(
            "gc.collected_all",
            collected=collected,
            took_s=round(time.perf_counter() - started, 3),
        )
