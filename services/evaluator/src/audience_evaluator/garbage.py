"""Python's garbage collector held to short pauses: between batches, survivors frozen out of it."""

import gc
import random
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
    generations are collected, i.e. what was made since the last batch (a few milliseconds), and
    what survives is frozen: moved out of every later collection.

    A frozen object is still freed by reference counting when dropped; what reference counting
    cannot free is a cycle, so an object frozen while reachable that later ends up in an
    unreachable cycle (a finished task's exception and traceback, say) waits for the collection of
    the whole heap, the one long pause left, at the first batch `full_every_s` or more after the
    last one. So does the rare object that an automatic collection inside a huge batch moved to
    the oldest generation and that died before the batch ended: the young collection between
    batches leaves the oldest generation alone, so that its pauses (generation 1 in the metrics)
    stay apart from the whole heap's (generation 2).
    """

    def __init__(self, full_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._full_every_s = full_every_s
        self._clock = clock
        # A random start, so that processes started together do not pause together.
        self._last_full = clock() - random.uniform(0, full_every_s)

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
