"""Garbage-collection pauses are timed into the evaluator's metrics."""

import gc

from audience_evaluator.metrics import GC_PAUSES, time_gc_pauses


def full_collections_timed() -> float:
    return sum(
        sample.value
        for metric in GC_PAUSES.collect()
        for sample in metric.samples
        if sample.name.endswith("_count") and sample.labels == {"generation": "2"}
    )


def test_time_gc_pauses__each_collection_timed__registered_once() -> None:
    time_gc_pauses()
    time_gc_pauses()  # a second call adds no second callback (each collection counts once)
    before = full_collections_timed()
    gc.collect()
    assert full_collections_timed() == before + 1
