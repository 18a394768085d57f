"""Where an audience's member counts are stored, and how readers add them up."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from audience_shared.topics import PARTITIONS, Topic

# The fields of an `audience_counts` document that readers show.
COUNT_FIELDS = ("member_count", "entered_total", "exited_total")

# An audience's counts are split over documents, so evaluator processes count in documents of
# their own instead of racing for one: each counts in the slot of the first user-events
# partition it holds (the partitions of a consumer group never overlap), plus the base document,
# `_id` = the audience id, which holds what older versions counted and the reconciler's repairs.
# Never lower it: a write token names its slot, and readers add up only slots below this.
COUNTER_SLOTS = PARTITIONS[Topic.USER_EVENTS]


def counter_id(audience_id: str, slot: int | None) -> str:
    """The `audience_counts` document of an audience's slot; None is its base document."""
    return audience_id if slot is None else f"{audience_id}|{slot}"


def counter_ids(audience_id: str) -> list[str]:
    """Every document an audience's counts may be in: the base first, then each slot."""
    return [audience_id, *(counter_id(audience_id, slot) for slot in range(COUNTER_SLOTS))]


def all_counter_ids(audience_ids: Iterable[str]) -> list[str]:
    return [doc_id for audience_id in audience_ids for doc_id in counter_ids(audience_id)]


def summed_counts(
    audience_ids: Sequence[str], counters: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, int]]:
    """Each audience's counts: the sum of its documents found in `counters` (by `_id`); an
    audience with none counts zero."""
    return {
        audience_id: {
            name: sum(
                int(counters[doc_id].get(name, 0))
                for doc_id in counter_ids(audience_id)
                if doc_id in counters
            )
            for name in COUNT_FIELDS
        }
        for audience_id in audience_ids
    }
