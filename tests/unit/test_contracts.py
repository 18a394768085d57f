"""Event contracts built without validation agree with validated ones."""

from datetime import UTC, datetime

import pytest

from audience_shared.events import MembershipChanged


def fields() -> dict[str, object]:
    return {
        "type": "membership.entered",
        "event_id": "chg_p/u_aud_3",
        "project_id": "p",
        "audience_id": "aud",
        "user_id": "u",
        "occurred_at": datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        "version": 3,
        "reason": "event",
    }


def test_trusted__same_message_as_validation() -> None:
    trusted = MembershipChanged.trusted(**fields())
    validated = MembershipChanged.model_validate(fields())
    assert trusted == validated
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_fields_set == validated.model_fields_set
    assert trusted.key == b"p/u"
    assert MembershipChanged.model_validate_json(trusted.model_dump_json()) == validated
    # The evaluator's publisher calls the serializer directly.
    serialized = MembershipChanged.__pydantic_serializer__.to_json(trusted)
    assert serialized == trusted.model_dump_json().encode()


def test_trusted__still_frozen() -> None:
    trusted = MembershipChanged.trusted(**fields())
    with pytest.raises(ValueError, match="frozen"):
        trusted.version = 4  # type: ignore[misc]


def test_trusted__a_field_missing_or_unknown__refused() -> None:
    partial = fields()
    del partial["reason"]
    with pytest.raises(TypeError, match="every field"):
        MembershipChanged.trusted(**partial)
    with pytest.raises(TypeError, match="every field"):
        MembershipChanged.trusted(**fields(), extra=1)
