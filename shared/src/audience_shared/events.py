"""Event contracts on the Kafka topics: past-tense facts, frozen, with ids for deduplication."""

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def new_event_id() -> str:
    return f"evt_{uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _field_names(contract: type[BaseModel]) -> frozenset[str]:
    """A contract's field names (asked for every message `trusted` builds)."""
    return frozenset(contract.model_fields)


class Contract(BaseModel):
    """Base of every message: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """A message built from values our own code produced, every field given: no validation
        and no defaults, as `model_construct` with its field set, at a fifth of its cost (the
        evaluator builds thousands a second). tests/unit/test_contracts.py checks it agrees with
        validation."""
        if fields.keys() != _field_names(cls):
            raise TypeError(f"{cls.__name__}.trusted needs every field, got {sorted(fields)}")
        message = cls.__new__(cls)
        object.__setattr__(message, "__dict__", fields)
        object.__setattr__(message, "__pydantic_fields_set__", set(fields))
        object.__setattr__(message, "__pydantic_extra__", None)
        object.__setattr__(message, "__pydantic_private__", None)
        return message


class UserEventBase(Contract):
    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=200)
    project_id: str = Field(min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=200)
    timestamp: datetime = Field(default_factory=utcnow, description="When it happened")
    received_at: datetime = Field(default_factory=utcnow, description="When we accepted it")

    @property
    def key(self) -> bytes:
        """Kafka key: the user, so one user's events stay ordered on one partition."""
        return f"{self.project_id}/{self.user_id}".encode()


class TraitsIdentified(UserEventBase):
    """An identify call: traits set on the user (merged into the profile).

    With `anonymous_id` it also links that anonymous visitor to the user: the anonymous profile
    is merged into the user's, exactly once.
    """

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)
    anonymous_id: str | None = Field(default=None, max_length=200)


class EventTracked(UserEventBase):
    """A track call: the user performed an event."""

    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class IntentSignalled(UserEventBase):
    """An intent signal: interest in a topic with a score (seed 001 intent audiences)."""

    type: Literal["intent"] = "intent"
    topic: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0, le=1)


class UsersAliased(UserEventBase):
    """An alias call: `previous_id` (an anonymous id or an old user id) is now `user_id`."""

    type: Literal["alias"] = "alias"
    previous_id: str = Field(min_length=1, max_length=200)


class ListMembershipChanged(UserEventBase):
    """A static or synced list (CSV import, Klaviyo list) added or removed the user."""

    type: Literal["list"] = "list"
    audience_id: str = Field(min_length=1, max_length=100)
    member: bool
    source: str = Field(default="import", max_length=100, description="e.g. csv, klaviyo")


AnyUserEvent = (
    TraitsIdentified | EventTracked | IntentSignalled | UsersAliased | ListMembershipChanged
)
UserEvent = Annotated[AnyUserEvent, Field(discriminator="type")]
user_event_adapter: TypeAdapter[AnyUserEvent] = TypeAdapter(UserEvent)

# Profiles of visitors known only by an anonymous id are keyed by this prefix plus that id.
ANONYMOUS_PREFIX = "anonymous:"


def anonymous_user_id(anonymous_id: str) -> str:
    return f"{ANONYMOUS_PREFIX}{anonymous_id}"


class AudienceChanged(Contract):
    """An audience was created, had its rule changed, or was deleted (archived)."""

    type: Literal["audience.changed"] = "audience.changed"
    event_id: str = Field(default_factory=new_event_id)
    project_id: str
    audience_id: str
    change: Literal["created", "updated", "deleted", "refresh_requested"]
    version: int = Field(ge=1, description="Rule version; older versions are ignored")
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return self.audience_id.encode()


class MembershipChanged(Contract):
    """A user entered or exited an audience."""

    type: Literal["membership.entered", "membership.exited"]
    event_id: str = Field(default_factory=new_event_id)
    project_id: str
    audience_id: str
    user_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    version: int = Field(description="Profile version that decided the change")
    reason: Literal["event", "time", "rule_change", "backfill", "archived", "refresh", "merged"] = (
        "event"
    )

    @property
    def key(self) -> bytes:
        return f"{self.project_id}/{self.user_id}".encode()


class DeadLetter(Contract):
    """A message that could not be processed, with the original bytes and the error."""

    type: Literal["dead_letter"] = "dead_letter"
    event_id: str = Field(default_factory=new_event_id)
    source_topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    payload_b64: str
    occurred_at: datetime = Field(default_factory=utcnow)
