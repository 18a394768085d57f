"""Between batches the collector takes the batch's cyclic garbage and freezes the survivors;
cycles among frozen objects wait for the collection of the whole heap."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from audience_evaluator.garbage import BatchCollector


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_after_batch__batch_garbage_collected__survivors_frozen_until_collect_all() -> None:
    collector = BatchCollector(full_every_s=600, clock=FakeClock())
    dropped, kept = Node(), Node()
    dropped_ref, kept_ref = weakref.ref(dropped), weakref.ref(kept)
    del dropped

    collector.after_batch()

    assert dropped_ref() is None
    assert gc.get_freeze_count() > 0
    del kept
    gc.collect()  # a full collection skips frozen objects
    assert kept_ref() is not None
    collector.collect_all()
    assert kept_ref() is None


def test_after_batch__full_interval_passed__frozen_cycles_collected() -> None:
    clock = FakeClock()
    collector = BatchCollector(full_every_s=600, clock=clock)
    kept = Node()
    kept_ref = weakref.ref(kept)
    collector.after_batch()
    del kept

    clock.now = 599.0
    collector.after_batch()
    assert kept_ref() is not None  # frozen, and the interval has not passed

    clock.now = 600.0
    collector.after_batch()
    assert kept_ref() is None
