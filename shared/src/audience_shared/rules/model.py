"""The canonical audience rule: one recursive pydantic model every input form compiles to."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from audience_shared.profile import coerce_trait_value, derived_event_field, to_utc_ms
from audience_shared.rules.durations import is_duration
from audience_shared.rules.values import kind_of

RULE_VERSION = 1
"""Bumped on any change to the meaning of a stored rule."""

MAX_STRING_LENGTH = 1000
MAX_NAME_LENGTH = 256
MAX_LIST_VALUES = 1000
_INT64 = 2**63


class TraitOperator(StrEnum):
    IS = "is"
    IS_NOT = "is_not"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"
    NOT_EXISTS = "not_exists"
    BEFORE = "before"
    AFTER = "after"
    WITHIN_LAST = "within_last"
    NOT_WITHIN_LAST = "not_within_last"


NEGATED_OPERATORS: dict[TraitOperator, TraitOperator] = {
    TraitOperator.IS_NOT: TraitOperator.IS,
    TraitOperator.NOT_CONTAINS: TraitOperator.CONTAINS,
    TraitOperator.NOT_IN: TraitOperator.IN,
    TraitOperator.NOT_EXISTS: TraitOperator.EXISTS,
    TraitOperator.NOT_WITHIN_LAST: TraitOperator.WITHIN_LAST,
}
"""Each negated operator and the positive one it is the exact complement of."""


class CountOperator(StrEnum):
    GTE = "gte"
    GT = "gt"
    LTE = "lte"
    LT = "lt"
    EQ = "eq"


def _coerce(value: Any) -> Any:
    return coerce_trait_value(value)


def _check_text(text: str, what: str, limit: int = MAX_STRING_LENGTH) -> str:
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text") from exc
    return text


def _check_name(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    return _check_text(text, "name", MAX_NAME_LENGTH)


ScalarValue = StrictBool | StrictInt | StrictFloat | StrictStr | datetime
TraitValue = Annotated[
    ScalarValue | list[ScalarValue] | None,
    BeforeValidator(_coerce),
]
Name = Annotated[str, AfterValidator(_check_name)]
Moment = Annotated[datetime, BeforeValidator(_coerce), AfterValidator(to_utc_ms)]


def check_field_path(field: str) -> str:
    """A trait or property path: dot-separated, no empty, `$`-led or all-digit segments."""
    _check_name(field)
    if "`" in field:
        raise ValueError("a field must not contain a backtick")
    if derived_event_field(field) is not None:
        return field
    for segment in field.split("."):
        if not segment:
            raise ValueError(f"field {field!r} has an empty path segment")
        if segment.startswith("$"):
            raise ValueError(f"field {field!r} has a segment starting with '$'")
        if segment.isdigit():
            raise ValueError(
                f"field {field!r} has a numeric segment; array indices are not supported"
            )
    return field


def check_scalar(value: Any) -> None:
    """A rule value both executors and BSON can hold exactly."""
    kind = kind_of(value)
    if kind is None:
        raise ValueError(f"{value!r} is not a string, number, boolean or date-time")
    if type(value) is float and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    if type(value) is int and not -_INT64 <= value < _INT64:
        raise ValueError("integers must fit in 64 bits")
    if type(value) is str:
        _check_text(value, "a value")


_ORDERABLE = ("number", "string", "datetime")


def check_trait_value(operator: TraitOperator, value: Any) -> None:
    """Raise ValueError unless `value` is the shape `operator` takes."""
    op = TraitOperator
    if operator in (op.EXISTS, op.NOT_EXISTS):
        if value is not None:
            raise ValueError(f"{operator} takes no value")
        return
    if value is None:
        raise ValueError(f"{operator} needs a value")
    if operator in (op.IN, op.NOT_IN):
        if not isinstance(value, list) or not value:
            raise ValueError(f"{operator} needs a non-empty list of values")
        if len(value) > MAX_LIST_VALUES:
            raise ValueError(f"{operator} takes at most {MAX_LIST_VALUES} values")
        for item in value:
            check_scalar(item)
        return
    if operator == op.BETWEEN:
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError("between needs a list of two values [low, high]")
        low, high = value
        check_scalar(low)
        check_scalar(high)
        if kind_of(low) not in _ORDERABLE or kind_of(low) != kind_of(high):
            raise ValueError("between needs two numbers, two strings or two date-times")
        if low > high:
            raise ValueError("between needs low <= high")
        return
    if isinstance(value, list):
        raise ValueError(f"{operator} takes a single value, not a list")
    check_scalar(value)
    kind = kind_of(value)
    if operator in (op.STARTS_WITH, op.ENDS_WITH) and kind != "string":
        raise ValueError(f"{operator} needs a string")
    if operator in (op.GT, op.GTE, op.LT, op.LTE) and kind not in _ORDERABLE:
        raise ValueError(f"{operator} needs a number, a string or a date-time")
    if operator in (op.BEFORE, op.AFTER) and kind != "datetime":
        raise ValueError(f"{operator} needs a date or date-time")
    if operator in (op.WITHIN_LAST, op.NOT_WITHIN_LAST) and (
        kind != "string" or not is_duration(value)
    ):
        raise ValueError(f"{operator} needs a duration such as 30m, 12h, 7d or 2w")


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TraitCondition(BaseModel):
    """A comparison on a profile field (trait or derived), or on an event property in `where`."""

    model_config = _FROZEN

    type: Literal["trait"] = "trait"
    field: str
    operator: TraitOperator
    value: TraitValue = None

    @field_validator("field")
    @classmethod
    def _field_path(cls, field: str) -> str:
        return check_field_path(field)

    @model_validator(mode="before")
    @classmethod
    def _exists_takes_true(cls, data: Any) -> Any:
        # Seed 004 sends `"value": true` with exists/not_exists; it carries no information.
        if (
            isinstance(data, dict)
            and data.get("operator") in ("exists", "not_exists")
            and data.get("value") is True
        ):
            return {key: item for key, item in data.items() if key != "value"}
        return data

    @model_validator(mode="after")
    def _value_fits_operator(self) -> TraitCondition:
        check_trait_value(self.operator, self.value)
        return self


class CountClause(BaseModel):
    """How many matching events: `{"operator": "gte", "value": 3}` is at least 3 times."""

    model_config = _FROZEN

    operator: CountOperator = CountOperator.GTE
    value: Annotated[int, Field(ge=0, le=1_000_000_000)]


class RelativeWindow(BaseModel):
    """Events in the last `last` (a duration) before the evaluation instant."""

    model_config = _FROZEN

    last: str

    @field_validator("last")
    @classmethod
    def _duration(cls, last: str) -> str:
        if not is_duration(last):
            raise ValueError("must be a duration such as 30m, 12h, 7d or 2w")
        return last


class AbsoluteWindow(BaseModel):
    """Events between two instants, both inclusive."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    from_: Moment = Field(alias="from")
    to: Moment

    @model_validator(mode="after")
    def _ordered(self) -> AbsoluteWindow:
        if self.from_ > self.to:
            raise ValueError("window needs from <= to")
        return self


class EventCondition(BaseModel):
    """Performed (or not) an event, optionally filtered, counted and windowed."""

    model_config = _FROZEN

    type: Literal["event"] = "event"
    event: Name
    performed: bool = True
    count: CountClause | None = None
    window: RelativeWindow | AbsoluteWindow | None = None
    where: list[TraitCondition] = Field(default_factory=list)


class IntentCondition(BaseModel):
    """An intent signal on any of `topics` with at least `min_score` in the last `days` days."""

    model_config = _FROZEN

    type: Literal["intent"] = "intent"
    topics: Annotated[list[Name], Field(min_length=1, max_length=50)]
    min_score: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    days: Annotated[int, Field(ge=1, le=14)] = 1


class AudienceCondition(BaseModel):
    """Membership of another audience of the same project.

    Criteria name audiences (`audience_name`); the API resolves the name to `audience_id`
    before the rule is compiled.
    """

    model_config = _FROZEN

    type: Literal["audience"] = "audience"
    audience_id: Name | None = None
    audience_name: Name | None = None
    member: bool = True

    @model_validator(mode="after")
    def _identified(self) -> AudienceCondition:
        if self.audience_id is None and self.audience_name is None:
            raise ValueError("an audience condition needs audience_id or audience_name")
        return self


Condition = TraitCondition | EventCondition | IntentCondition | AudienceCondition


def _rule_tag(value: Any) -> str:
    if isinstance(value, dict):
        tag = value.get("type", "group")
        return tag if isinstance(tag, str) else "invalid"
    return str(getattr(value, "type", "group"))


_MATCH_ALIASES = {"all": "all", "and": "all", "any": "any", "or": "any"}


class Group(BaseModel):
    """Rules joined by `match` (all = AND, any = OR), optionally negated; the root of every rule.

    Canonical form, applied on construction so that one meaning has one spelling: a group with
    one rule has match "all", and a group whose only rule is a group merges with it (NOT of a
    single group negates that group; NOT NOT cancels).
    """

    model_config = _FROZEN

    match: Literal["all", "any"] = "all"
    negate: bool = False
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("type") == "group":
            data = {key: item for key, item in data.items() if key != "type"}
        match = data.get("match")
        if isinstance(match, str) and match.lower() in _MATCH_ALIASES:
            data = {**data, "match": _MATCH_ALIASES[match.lower()]}
        rules = data.get("rules")
        if isinstance(rules, list) and len(rules) == 1:
            data = {**data, "match": "all"}
            child = rules[0]
            negate = data.get("negate", False)
            if isinstance(negate, bool):
                if isinstance(child, Group):
                    return {
                        "match": child.match,
                        "negate": child.negate != negate,
                        "rules": child.rules,
                    }
                if isinstance(child, dict) and child.get("type", "group") == "group":
                    child_negate = child.get("negate", False)
                    if isinstance(child_negate, bool):
                        return {**child, "negate": child_negate != negate}
        return data


Rule = Annotated[
    Annotated[Group, Tag("group")]
    | Annotated[TraitCondition, Tag("trait")]
    | Annotated[EventCondition, Tag("event")]
    | Annotated[IntentCondition, Tag("intent")]
    | Annotated[AudienceCondition, Tag("audience")],
    Discriminator(_rule_tag),
]

Group.model_rebuild()
