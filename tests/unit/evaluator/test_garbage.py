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
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def frozen_then_dropped(collector: BatchCollector) -> weakref.ref[Node]:
    """A cycle alive at a batch's end and dropped after it."""
    node = Node()
    ref = weakref.ref(node)
    collector.after_batch()
    del node
    return ref


def test_after_batch__batch_garbage_collected__survivors_frozen_until_collect_all() -> None:
    collector = BatchCollector(full_every_s=600, clock=FakeClock())
    dropped = Node()
    dropped_ref = weakref.ref(dropped)
    gc.collect(0)  # an automatic collection during the batch moved it to the second generation
    del dropped

    kept_ref = frozen_then_dropped(collector)

    assert dropped_ref() is None
    gc.collect()  # a full collection skips frozen objects
    assert kept_ref() is not None
    collector.collect_all()
    assert kept_ref() is None


def test_after_batch__full_interval_passed__frozen_cycles_collected_then_frozen_again() -> None:
    clock = FakeClock()
    collector = BatchCollector(full_every_s=600, clock=clock)
    clock.now = 600.0  # past the first full collection, whatever its random start
    collector.after_batch()

    first = frozen_then_dropped(collector)
    clock.now = 1199.0
    collector.after_batch()
    assert first() is not None  # frozen, and the interval has not passed since the last one

    clock.now = 1200.0
    second = frozen_then_dropped(collector)  # this batch collects everything, then freezes
    assert first() is None
    gc.collect()
    assert second() is not None  # survivors of the full collection are frozen again
    clock.now = 1800.0
    collector.after_batch()
    assert second() is None


def test_collector__processes_started_together__first_full_collections_spread() -> None:
    starts = {BatchCollector(full_every_s=600, clock=FakeClock())._last_full for _ in range(20)}
    assert len(starts) > 1
    assert all(-600 <= start <= 0 for start in starts)
