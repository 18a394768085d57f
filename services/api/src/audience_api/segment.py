"""Segment/RudderStack tracking-spec messages mapped to our user-event contracts (pure)."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from audience_shared.events import (
    ANONYMOUS_PREFIX,
    EventTracked,
    TraitsIdentified,
    UserEventBase,
    UsersAliased,
    anonymous_user_id,
    new_event_id,
)
from audience_shared.profile import encode_key

MessageType = Literal["identify", "track", "page", "screen", "group", "alias"]

# The spec's limits: 500 KB per batch request and 32 KB per message, both after decompression.
MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024

PAGE_EVENT = "page_viewed"
SCREEN_EVENT = "screen_viewed"

# `integrations: {"Audiences": false}` opts a message out of this service, the way the spec's
# integrations object turns a destination off.
INTEGRATION_NAME = "Audiences"

# One message can yield several events, all for the same user, so each needs its own event id;
# derived ids are the message id plus one of these suffixes, and stay the same on a retry.
TRAITS_SUFFIX = ":traits"
PREVIOUS_USER_SUFFIX = ":previous_user"
MAX_MESSAGE_ID = 200 - len(PREVIOUS_USER_SUFFIX)
# anonymous_user_id() prefixes the id, and the result must still fit a user id.
MAX_ANONYMOUS_ID = 200 - len(ANONYMOUS_PREFIX)

# Keys that only the spec's shape has; the native identify body uses `user_id`.
SPEC_KEYS = frozenset({"userId", "anonymousId", "type", "messageId", "previousId"})


def _id_text(value: Any) -> Any:
    """SDKs send ids as strings or numbers; an empty id is no id."""
    if isinstance(value, bool):
        return value  # left for validation to reject
    if isinstance(value, int | float):
        return str(value)
    if value == "":
        return None
    return value


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value


SpecId = Annotated[str | None, BeforeValidator(_id_text)]
SpecObject = Annotated[dict[str, Any], BeforeValidator(_empty_if_null)]


class SpecMessage(BaseModel):
    """One message of the tracking spec. Unknown fields (channel, version, _metadata, ...) are
    ignored: SDKs add their own, and refusing them would refuse the SDKs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: MessageType
    user_id: SpecId = Field(default=None, alias="userId", max_length=200)
    anonymous_id: SpecId = Field(default=None, alias="anonymousId", max_length=MAX_ANONYMOUS_ID)
    message_id: SpecId = Field(default=None, alias="messageId", max_length=MAX_MESSAGE_ID)
    timestamp: datetime | None = None
    original_timestamp: datetime | None = Field(default=None, alias="originalTimestamp")
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    event: str | None = Field(default=None, max_length=200)
    name: str | None = None
    category: str | None = None
    properties: SpecObject = Field(default_factory=dict)
    traits: SpecObject = Field(default_factory=dict)
    context: SpecObject = Field(default_factory=dict)
    integrations: SpecObject = Field(default_factory=dict)
    group_id: SpecId = Field(default=None, alias="groupId", max_length=200)
    previous_id: SpecId = Field(default=None, alias="previousId", max_length=200)


@dataclass(frozen=True)
class MessageError:
    """Why one message of a request was rejected; the others are unaffected."""

    index: int
    code: str
    message: str
    field: str | None = None

    def as_detail(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "code": self.code,
            "field": self.field,
            "message": self.message,
        }


class MessageRejected(ValueError):
    """A message that cannot be mapped; carries the error code and the offending field."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass
class MappedMessages:
    """The events of the accepted messages, the errors of the rejected ones, and how many
    messages opted out of this service through `integrations`."""

    total: int
    events: list[UserEventBase] = field(default_factory=list)
    errors: list[MessageError] = field(default_factory=list)
    opted_out: int = 0


def error_body(code: str, message: str, details: Any = None, **extra: Any) -> dict[str, Any]:
    """The one error shape, plus the top-level `success`, `code` and `message` that the SDKs
    read (RudderStack's Python SDK raises KeyError on an error body without them)."""
    return {
        "success": False,
        "code": code,
        "message": message,
        **extra,
        "error": {"code": code, "message": message, "details": details},
    }


def is_spec_message(body: object) -> bool:
    """Whether a single-message body is in the spec's camelCase shape rather than the native one."""
    if not isinstance(body, dict) or "user_id" in body or "batch" in body:
        return False
    return any(key in body for key in SPEC_KEYS)


def message_size(raw: object) -> int:
    """Bytes of a message as compact UTF-8 JSON: never more than the SDKs' own measure, so a
    message an SDK let through is not refused here."""
    encoded = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(encoded.encode())


def corrected_timestamp(
    client_time: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """When it happened, corrected for the client's clock skew as the spec describes:
    `timestamp + (receivedAt - sentAt)`. Without a client time it happened when received; a
    corrected time after the receive time (a client time later than its own sentAt) is capped
    at the receive time, since nothing we received can have happened after we received it."""
    if client_time is None:
        return received_at
    client_time = _aware(client_time)
    if sent_at is not None:
        client_time = client_time + (received_at - _aware(sent_at))
    return min(client_time, received_at)


def map_messages(
    messages: Sequence[Any],
    *,
    project_id: str,
    received_at: datetime,
    sent_at: datetime | None = None,
    context: Mapping[str, Any] | None = None,
    integrations: Mapping[str, Any] | None = None,
    message_type: MessageType | None = None,
) -> MappedMessages:
    """Map every message, collecting per-message errors by index instead of failing the lot.

    `sent_at`, `context` and `integrations` are the batch-level values (a message's own win);
    `message_type` is the type a single-message endpoint implies.
    """
    mapped = MappedMessages(total=len(messages))
    for index, raw in enumerate(messages):
        try:
            events = map_message(
                raw,
                project_id=project_id,
                received_at=received_at,
                sent_at=sent_at,
                context=context,
                integrations=integrations,
                message_type=message_type,
            )
        except MessageRejected as exc:
            mapped.errors.append(MessageError(index, exc.code, exc.message, exc.field))
            continue
        if events is None:
            mapped.opted_out += 1
        else:
            mapped.events.extend(events)
    return mapped


def map_message(
    raw: Any,
    *,
    project_id: str,
    received_at: datetime,
    sent_at: datetime | None = None,
    context: Mapping[str, Any] | None = None,
    integrations: Mapping[str, Any] | None = None,
    message_type: MessageType | None = None,
) -> list[UserEventBase] | None:
    """The events of one message, or None when the message opted out of this service.

    Raises MessageRejected when the message is too large or invalid.
    """
    if not isinstance(raw, dict):
        raise MessageRejected("invalid_message", "A message must be a JSON object")
    size = message_size(raw)
    if size > MAX_MESSAGE_BYTES:
        raise MessageRejected(
            "message_too_large",
            f"The message is {size} bytes; messages are limited to {MAX_MESSAGE_BYTES} bytes",
        )
    if message_type is not None:
        given = raw.get("type")
        if given is not None and given != message_type:
            raise MessageRejected(
                "type_mismatch",
                f"This endpoint takes {message_type} messages, not {given!r}",
                "type",
            )
        raw = {**raw, "type": message_type}
    try:
        message = SpecMessage.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MessageRejected(
            "invalid_message",
            f"{_loc(first['loc']) or 'message'}: {first['msg']}",
            _loc(first["loc"]) or None,
        ) from exc
    if not _wanted({**(integrations or {}), **message.integrations}):
        return None
    merged_context = {**(context or {}), **message.context}
    try:
        return _events(message, project_id, received_at, sent_at, merged_context)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MessageRejected(
            "invalid_message", f"{_loc(first['loc']) or 'message'}: {first['msg']}"
        ) from exc


def _events(
    message: SpecMessage,
    project_id: str,
    received_at: datetime,
    batch_sent_at: datetime | None,
    context: Mapping[str, Any],
) -> list[UserEventBase]:
    user_id = _user_id(message)
    event_id = message.message_id or new_event_id()
    timestamp = corrected_timestamp(
        message.timestamp or message.original_timestamp,
        message.sent_at or batch_sent_at,
        received_at,
    )
    common: dict[str, Any] = {
        "project_id": project_id,
        "user_id": user_id,
        "timestamp": timestamp,
        "received_at": received_at,
    }
    context_traits = context.get("traits") or {}
    if not isinstance(context_traits, dict):
        raise MessageRejected(
            "invalid_message", "context.traits must be an object", "context.traits"
        )

    def context_identify() -> list[UserEventBase]:
        """Traits an SDK attached to a non-identify call, as an identify of their own."""
        if not context_traits:
            return []
        return [
            TraitsIdentified(**common, event_id=event_id + TRAITS_SUFFIX, traits=context_traits)
        ]

    if message.type == "identify":
        # Traits given on the call are newer than the SDK's cached context.traits.
        traits = {**context_traits, **message.traits}
        # Both ids on an identify link the anonymous visitor to the user (see docs/segment.md).
        link = message.anonymous_id if message.user_id is not None else None
        return [TraitsIdentified(**common, event_id=event_id, traits=traits, anonymous_id=link)]
    if message.type == "track":
        if not message.event:
            raise MessageRejected("invalid_message", "event is required on a track call", "event")
        track = EventTracked(
            **common, event_id=event_id, event=message.event, properties=message.properties
        )
        return [*context_identify(), track]
    if message.type in ("page", "screen"):
        named = {"name": message.name} if message.name else {}
        if message.category:
            named["category"] = message.category
        viewed = EventTracked(
            **common,
            event_id=event_id,
            event=PAGE_EVENT if message.type == "page" else SCREEN_EVENT,
            properties={**message.properties, **named},
        )
        return [*context_identify(), viewed]
    if message.type == "group":
        if message.group_id is None:
            raise MessageRejected(
                "invalid_message", "groupId is required on a group call", "groupId"
            )
        # Group ids become a path segment of the trait (groups.<id>.<trait>), so characters a
        # document field name cannot hold are percent-encoded like event names are.
        groups = {"groups": {encode_key(message.group_id): message.traits}}
        traits = {**context_traits, **groups}
        return [TraitsIdentified(**common, event_id=event_id, traits=traits)]
    return _aliases(message, common, event_id)


def _aliases(message: SpecMessage, common: dict[str, Any], event_id: str) -> list[UserEventBase]:
    """An alias links `previousId` to `userId`. The spec does not say whether `previousId` was an
    anonymous id (what analytics.js sends before an identify) or an earlier user id (an account
    merge), so both profiles it can name are linked: `anonymous:<previousId>` and `<previousId>`.
    Linking a profile that does not exist merges nothing."""
    if message.previous_id is None:
        raise MessageRejected(
            "invalid_message", "previousId is required on an alias call", "previousId"
        )
    aliases: list[UserEventBase] = []
    if not message.previous_id.startswith(ANONYMOUS_PREFIX):
        aliases.append(
            UsersAliased(
                **common, event_id=event_id, previous_id=anonymous_user_id(message.previous_id)
            )
        )
    if message.previous_id != message.user_id:
        aliases.append(
            UsersAliased(
                **common,
                event_id=event_id + PREVIOUS_USER_SUFFIX if aliases else event_id,
                previous_id=message.previous_id,
            )
        )
    return aliases


def _user_id(message: SpecMessage) -> str:
    """The profile a message lands on: the user id, else the anonymous visitor's profile."""
    if message.type == "alias":
        if message.user_id is None:
            raise MessageRejected(
                "invalid_message", "userId is required on an alias call", "userId"
            )
        return message.user_id
    if message.user_id is not None:
        return message.user_id
    if message.anonymous_id is not None:
        return anonymous_user_id(message.anonymous_id)
    raise MessageRejected("invalid_message", "userId or anonymousId is required", "userId")


def _wanted(integrations: Mapping[str, Any]) -> bool:
    return integrations.get(INTEGRATION_NAME) is not False


def _aware(moment: datetime) -> datetime:
    """Naive times from a client are read as UTC, as the spec's ISO-8601 strings should be."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)
