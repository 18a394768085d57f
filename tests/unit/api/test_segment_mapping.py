"""Mapping Segment/RudderStack spec messages to our contracts: pure functions, no I/O."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audience_api.segment import (
    MAX_MESSAGE_BYTES,
    PAGE_EVENT,
    SCREEN_EVENT,
    corrected_timestamp,
    error_body,
    is_spec_message,
    map_message,
    map_messages,
    message_size,
)
from audience_shared.events import (
    EventTracked,
    TraitsIdentified,
    UserEventBase,
    UsersAliased,
    anonymous_user_id,
)

PROJECT = "prj_test"
RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def one(raw: dict[str, Any], **kwargs: Any) -> list[UserEventBase]:
    events = map_message(raw, project_id=PROJECT, received_at=RECEIVED, **kwargs)
    assert events is not None
    return events


# --- clock skew ---------------------------------------------------------------------------------


def test_timestamp__client_clock_ahead__is_corrected_by_received_minus_sent_at() -> None:
    # The client's clock runs 1 hour fast: it stamped the event 10 s before sending.
    sent_at = RECEIVED + timedelta(hours=1)
    [event] = one(
        {
            "type": "track",
            "userId": "u1",
            "event": "Signed Up",
            "timestamp": (sent_at - timedelta(seconds=10)).isoformat(),
            "sentAt": sent_at.isoformat(),
        }
    )
    assert event.timestamp == RECEIVED - timedelta(seconds=10)
    assert event.received_at == RECEIVED


def test_timestamp__batch_sent_at__applies_when_the_message_has_none() -> None:
    sent_at = RECEIVED - timedelta(minutes=5)  # client clock 5 minutes slow
    mapped = map_messages(
        [{"type": "track", "userId": "u1", "event": "x", "timestamp": sent_at.isoformat()}],
        project_id=PROJECT,
        received_at=RECEIVED,
        sent_at=sent_at,
    )
    assert mapped.events[0].timestamp == RECEIVED


def test_timestamp__message_sent_at__wins_over_the_batch_sent_at() -> None:
    client = RECEIVED - timedelta(days=1)
    mapped = map_messages(
        [
            {
                "type": "track",
                "userId": "u1",
                "event": "x",
                "timestamp": client.isoformat(),
                "sentAt": client.isoformat(),
            }
        ],
        project_id=PROJECT,
        received_at=RECEIVED,
        sent_at=RECEIVED - timedelta(hours=3),
    )
    assert mapped.events[0].timestamp == RECEIVED


def test_timestamp__without_sent_at__is_the_client_time_unchanged() -> None:
    historical = datetime(2025, 6, 1, tzinfo=UTC)
    [event] = one(
        {"type": "track", "userId": "u1", "event": "x", "timestamp": "2025-06-01T00:00:00Z"}
    )
    assert event.timestamp == historical


def test_timestamp__rudderstack_original_timestamp__is_the_client_time() -> None:
    [event] = one(
        {
            "type": "track",
            "userId": "u1",
            "event": "x",
            "originalTimestamp": "2026-03-01T11:00:00Z",
            "sentAt": "2026-03-01T11:00:30Z",
        }
    )
    assert event.timestamp == RECEIVED - timedelta(seconds=30)


def test_timestamp__absent__is_the_receive_time() -> None:
    [event] = one({"type": "track", "userId": "u1", "event": "x"})
    assert event.timestamp == RECEIVED


def test_timestamp__later_than_its_own_sent_at__is_capped_at_the_receive_time() -> None:
    assert (
        corrected_timestamp(RECEIVED + timedelta(hours=2), RECEIVED + timedelta(hours=1), RECEIVED)
        == RECEIVED
    )


def test_timestamp__naive__is_read_as_utc() -> None:
    [event] = one({"type": "track", "userId": "u1", "event": "x", "timestamp": "2026-02-01T08:00"})
    assert event.timestamp == datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


# --- message types ------------------------------------------------------------------------------


def test_track__maps_to_event_tracked_with_message_id_as_event_id() -> None:
    [event] = one(
        {
            "type": "track",
            "userId": "u1",
            "event": "Order Completed",
            "properties": {"total": 30},
            "messageId": "msg-1",
            "channel": "server",
            "context": {"library": {"name": "analytics-python"}},
            "integrations": {"All": True},
        }
    )
    assert isinstance(event, EventTracked)
    assert (event.event_id, event.user_id, event.project_id) == ("msg-1", "u1", PROJECT)
    assert (event.event, event.properties) == ("Order Completed", {"total": 30})


def test_track__same_message_twice__maps_to_the_same_event_ids() -> None:
    raw = {
        "type": "track",
        "userId": "u1",
        "event": "x",
        "messageId": "m",
        "context": {"traits": {"a": 1}},
    }
    assert [e.event_id for e in one(raw)] == [e.event_id for e in one(raw)] == ["m:traits", "m"]


def test_page__becomes_page_viewed_with_name_and_category_in_properties() -> None:
    [event] = one(
        {
            "type": "page",
            "userId": "u1",
            "name": "Pricing",
            "category": "Docs",
            "properties": {"path": "/pricing", "name": "overridden"},
        }
    )
    assert isinstance(event, EventTracked)
    assert event.event == PAGE_EVENT == "page_viewed"
    assert event.properties == {"path": "/pricing", "name": "Pricing", "category": "Docs"}


def test_page__without_name__keeps_its_properties() -> None:
    [event] = one({"type": "page", "anonymousId": "a1", "properties": {"url": "https://x.test/"}})
    assert isinstance(event, EventTracked)
    assert event.properties == {"url": "https://x.test/"}


def test_screen__becomes_screen_viewed() -> None:
    [event] = one({"type": "screen", "userId": "u1", "name": "Home"})
    assert isinstance(event, EventTracked)
    assert (event.event, event.properties) == (SCREEN_EVENT, {"name": "Home"})
    assert SCREEN_EVENT == "screen_viewed"


def test_identify__traits_and_context_traits_merge__call_traits_win() -> None:
    [event] = one(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"plan": "premium"},
            "context": {"traits": {"plan": "free", "email": "a@b.test"}},
        }
    )
    assert isinstance(event, TraitsIdentified)
    assert event.traits == {"plan": "premium", "email": "a@b.test"}
    assert event.anonymous_id is None


def test_identify__rudderstack_sends_traits_only_in_context() -> None:
    [event] = one({"type": "identify", "userId": "u1", "context": {"traits": {"plan": "pro"}}})
    assert isinstance(event, TraitsIdentified)
    assert event.traits == {"plan": "pro"}


def test_identify__batch_context_traits__merge_under_the_message_context() -> None:
    mapped = map_messages(
        [{"type": "identify", "userId": "u1", "context": {"locale": "fr"}}],
        project_id=PROJECT,
        received_at=RECEIVED,
        context={"traits": {"plan": "pro"}, "locale": "en"},
    )
    [event] = mapped.events
    assert isinstance(event, TraitsIdentified)
    assert event.traits == {"plan": "pro"}


def test_track__with_context_traits__also_identifies_first() -> None:
    identify, track = one(
        {
            "type": "track",
            "userId": "u1",
            "event": "x",
            "messageId": "m1",
            "context": {"traits": {"plan": "premium"}},
        }
    )
    assert isinstance(identify, TraitsIdentified)
    assert (identify.traits, identify.event_id, identify.user_id) == (
        {"plan": "premium"},
        "m1:traits",
        "u1",
    )
    assert isinstance(track, EventTracked)
    assert track.event_id == "m1"


def test_page__with_context_traits__also_identifies() -> None:
    identify, page = one({"type": "page", "userId": "u1", "context": {"traits": {"plan": "pro"}}})
    assert isinstance(identify, TraitsIdentified)
    assert isinstance(page, EventTracked)


def test_group__stores_group_traits_nested_under_groups_and_the_group_id() -> None:
    [event] = one(
        {
            "type": "group",
            "userId": "u1",
            "groupId": "acme",
            "traits": {"tier": "gold", "employees": 50},
        }
    )
    assert isinstance(event, TraitsIdentified)
    assert event.traits == {"groups": {"acme": {"tier": "gold", "employees": 50}}}


def test_group__numeric_id_and_dotted_id__are_safe_path_segments() -> None:
    [numeric] = one({"type": "group", "userId": "u1", "groupId": 42, "traits": {}})
    [dotted] = one({"type": "group", "userId": "u1", "groupId": "acme.com", "traits": {}})
    assert isinstance(numeric, TraitsIdentified)
    assert isinstance(dotted, TraitsIdentified)
    assert numeric.traits == {"groups": {"42": {}}}
    assert dotted.traits == {"groups": {"acme%2Ecom": {}}}


def test_group__keeps_user_context_traits_beside_the_group() -> None:
    [event] = one(
        {
            "type": "group",
            "userId": "u1",
            "groupId": "g1",
            "traits": {"name": "G"},
            "context": {"traits": {"plan": "pro"}},
        }
    )
    assert isinstance(event, TraitsIdentified)
    assert event.traits == {"plan": "pro", "groups": {"g1": {"name": "G"}}}


# --- identity -----------------------------------------------------------------------------------


def test_anonymous_only__lands_on_the_anonymous_profile() -> None:
    [event] = one({"type": "track", "anonymousId": "anon-1", "event": "x"})
    assert event.user_id == anonymous_user_id("anon-1") == "anonymous:anon-1"


def test_user_and_anonymous_ids_on_track__lands_on_the_user_and_links_nothing() -> None:
    [event] = one({"type": "track", "userId": "u1", "anonymousId": "anon-1", "event": "x"})
    assert event.user_id == "u1"


def test_identify__with_both_ids__links_the_anonymous_id() -> None:
    [event] = one({"type": "identify", "userId": "u1", "anonymousId": "anon-1"})
    assert isinstance(event, TraitsIdentified)
    assert (event.user_id, event.anonymous_id) == ("u1", "anon-1")


def test_identify__anonymous_only__links_nothing() -> None:
    [event] = one({"type": "identify", "anonymousId": "anon-1", "traits": {"plan": "free"}})
    assert isinstance(event, TraitsIdentified)
    assert (event.user_id, event.anonymous_id) == ("anonymous:anon-1", None)


def test_numeric_user_id__is_a_string() -> None:
    [event] = one({"type": "track", "userId": 123, "event": "x"})
    assert event.user_id == "123"


def test_empty_user_id__falls_back_to_the_anonymous_id() -> None:
    [event] = one({"type": "track", "userId": "", "anonymousId": "a", "event": "x"})
    assert event.user_id == "anonymous:a"


def test_alias__links_both_the_anonymous_and_the_user_profile_of_previous_id() -> None:
    first, second = one({"type": "alias", "userId": "u1", "previousId": "p1", "messageId": "m"})
    assert isinstance(first, UsersAliased)
    assert isinstance(second, UsersAliased)
    assert (first.user_id, first.previous_id, first.event_id) == ("u1", "anonymous:p1", "m")
    assert (second.user_id, second.previous_id, second.event_id) == (
        "u1",
        "p1",
        "m:previous_user",
    )


def test_alias__previous_id_equal_to_user_id__links_only_the_anonymous_profile() -> None:
    [event] = one({"type": "alias", "userId": "u1", "previousId": "u1"})
    assert isinstance(event, UsersAliased)
    assert event.previous_id == "anonymous:u1"


def test_alias__previous_id_already_anonymous_form__is_not_prefixed_twice() -> None:
    [event] = one({"type": "alias", "userId": "u1", "previousId": "anonymous:a1"})
    assert isinstance(event, UsersAliased)
    assert event.previous_id == "anonymous:a1"


# --- errors and opt-outs ------------------------------------------------------------------------


def test_batch__invalid_messages__are_reported_by_index_and_the_rest_mapped() -> None:
    mapped = map_messages(
        [
            {"type": "track", "userId": "u1", "event": "ok"},
            {"type": "track", "event": "no ids"},
            {"type": "teleport", "userId": "u1"},
            "not an object",
            {"type": "track", "userId": "u1"},
            {"type": "alias", "userId": "u1"},
            {"type": "group", "userId": "u1"},
            {"type": "identify", "userId": "u1", "traits": ["not", "a", "dict"]},
            {"type": "identify", "userId": "u1", "timestamp": "yesterday"},
            {"type": "identify", "userId": "u2"},
        ],
        project_id=PROJECT,
        received_at=RECEIVED,
    )
    assert mapped.total == 10
    assert [e.user_id for e in mapped.events] == ["u1", "u2"]
    assert [(e.index, e.field) for e in mapped.errors] == [
        (1, "userId"),
        (2, "type"),
        (3, None),
        (4, "event"),
        (5, "previousId"),
        (6, "groupId"),
        (7, "traits"),
        (8, "timestamp"),
    ]
    assert {e.code for e in mapped.errors} == {"invalid_message"}
    assert mapped.errors[0].as_detail() == {
        "index": 1,
        "code": "invalid_message",
        "field": "userId",
        "message": "userId or anonymousId is required",
    }


def test_batch__oversize_message__is_rejected_alone() -> None:
    big = {
        "type": "track",
        "userId": "u1",
        "event": "x",
        "properties": {"b": "x" * MAX_MESSAGE_BYTES},
    }
    mapped = map_messages(
        [
            {"type": "track", "userId": "u1", "event": "a"},
            big,
            {"type": "track", "userId": "u2", "event": "b"},
        ],
        project_id=PROJECT,
        received_at=RECEIVED,
    )
    assert [e.user_id for e in mapped.events] == ["u1", "u2"]
    [error] = mapped.errors
    assert (error.index, error.code) == (1, "message_too_large")


def test_message__just_under_the_limit__is_accepted() -> None:
    raw: dict[str, Any] = {"type": "track", "userId": "u1", "event": "x", "properties": {"b": ""}}
    raw["properties"]["b"] = "y" * (MAX_MESSAGE_BYTES - message_size(raw))
    assert message_size(raw) == MAX_MESSAGE_BYTES
    assert len(one(raw)) == 1


def test_single_endpoint__type_mismatch__is_rejected() -> None:
    mapped = map_messages(
        [{"type": "identify", "userId": "u1"}],
        project_id=PROJECT,
        received_at=RECEIVED,
        message_type="track",
    )
    assert [(e.code, e.field) for e in mapped.errors] == [("type_mismatch", "type")]


def test_single_endpoint__type_is_implied_by_the_path() -> None:
    mapped = map_messages(
        [{"userId": "u1", "event": "x"}],
        project_id=PROJECT,
        received_at=RECEIVED,
        message_type="track",
    )
    assert [type(e) for e in mapped.events] == [EventTracked]


def test_overlong_ids__are_rejected_before_they_break_a_contract() -> None:
    mapped = map_messages(
        [
            {"type": "track", "anonymousId": "a" * 191, "event": "x"},
            {"type": "track", "userId": "u", "event": "x", "messageId": "m" * 187},
        ],
        project_id=PROJECT,
        received_at=RECEIVED,
    )
    assert [(e.index, e.field) for e in mapped.errors] == [(0, "anonymousId"), (1, "messageId")]


def test_integrations__audiences_false__opts_the_message_out() -> None:
    mapped = map_messages(
        [
            {"type": "track", "userId": "u1", "event": "x", "integrations": {"Audiences": False}},
            {"type": "track", "userId": "u1", "event": "y", "integrations": {"All": False}},
        ],
        project_id=PROJECT,
        received_at=RECEIVED,
    )
    assert [e.event for e in mapped.events if isinstance(e, EventTracked)] == ["y"]
    assert (mapped.opted_out, mapped.errors) == (1, [])


def test_integrations__batch_level_opt_out__can_be_overridden_by_a_message() -> None:
    mapped = map_messages(
        [
            {"type": "track", "userId": "u1", "event": "x"},
            {"type": "track", "userId": "u1", "event": "y", "integrations": {"Audiences": True}},
        ],
        project_id=PROJECT,
        received_at=RECEIVED,
        integrations={"Audiences": False},
    )
    assert [e.event for e in mapped.events if isinstance(e, EventTracked)] == ["y"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"userId": "u1", "traits": {}}, True),
        ({"anonymousId": "a1"}, True),
        ({"type": "identify", "userId": "u1"}, True),
        ({"user_id": "u1", "traits": {}}, False),
        ({"batch": [{"user_id": "u1"}]}, False),
        ({"traits": {}}, False),
        (["userId"], False),
    ],
)
def test_is_spec_message__detects_the_camel_case_shape(body: object, expected: bool) -> None:
    assert is_spec_message(body) is expected


def test_error_body__is_the_one_error_shape_plus_what_sdks_read() -> None:
    assert error_body("invalid_messages", "1 of 2", [{"index": 1}], accepted=1) == {
        "success": False,
        "code": "invalid_messages",
        "message": "1 of 2",
        "accepted": 1,
        "error": {"code": "invalid_messages", "message": "1 of 2", "details": [{"index": 1}]},
    }
