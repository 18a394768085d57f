"""Counting slots: which counter document a change is counted in, and how readers add them up."""

from audience_evaluator.adapters.mongo import counted_in, token_slot, write_token
from audience_evaluator.ports import Provenance
from audience_shared.counters import COUNTER_SLOTS, counter_ids, summed_counts
from audience_shared.events import MembershipChanged


def change(user: str) -> MembershipChanged:
    return MembershipChanged.model_validate(
        {
            "type": "membership.entered",
            "project_id": "p",
            "audience_id": "aud",
            "user_id": user,
            "version": 1,
        }
    )


def test_write_token__names_its_slot__none_for_the_base_and_older_tokens() -> None:
    assert token_slot(write_token(3)) == 3
    assert token_slot(write_token(None)) is None
    assert token_slot("0123456789abcdef") is None  # an older version's token
    assert token_slot(f"0123456789abcdef.{COUNTER_SLOTS}") is None  # no such slot
    assert token_slot(None) is None
    assert write_token(2) != write_token(2)


def test_counted_in__the_slot_of_the_deciding_write__whoever_delivers_it() -> None:
    fresh, carried, unknown = change("u1"), change("u2"), change("u3")
    provenance = Provenance(
        decided={fresh.event_id: "aaaa.1"},
        carried={carried.event_id: "bbbb.4", unknown.event_id: None},
    )
    assert counted_in(fresh, provenance) == "aud|1"
    assert counted_in(carried, provenance) == "aud|4"
    # Carried over from an outbox an older version wrote: where it counted everything.
    assert counted_in(unknown, provenance) == "aud"
    assert counted_in(change("u4"), Provenance()) == "aud"


def test_summed_counts__base_and_slots_added__documents_of_other_audiences_ignored() -> None:
    counters = {
        "aud": {"member_count": -2, "entered_total": 5, "exited_total": 7},
        "aud|0": {"member_count": 4, "entered_total": 4, "exited_total": 0},
        f"aud|{COUNTER_SLOTS - 1}": {"member_count": 1, "entered_total": 2, "exited_total": 1},
        "aud2|0": {"member_count": 100},
    }
    assert summed_counts(["aud", "none"], counters) == {
        "aud": {"member_count": 3, "entered_total": 11, "exited_total": 8},
        "none": {"member_count": 0, "entered_total": 0, "exited_total": 0},
    }
    assert counter_ids("aud")[0] == "aud"
    assert len(counter_ids("aud")) == COUNTER_SLOTS + 1
