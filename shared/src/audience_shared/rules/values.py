"""Typed comparisons shared by both executors: a type mismatch is no match, never an error."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeGuard

# Values fall into kinds (number, string, bool, datetime) the way BSON brackets types: a number
# never equals a bool (True != 1), strings compare with strings, datetimes with datetimes. A list
# matches a positive comparison when one of its elements does, like a MongoDB array field.
# Profile values are untyped JSON-like data from the store, hence Any in these signatures.

Kind = Literal["number", "string", "bool", "datetime"]
Scalar = bool | int | float | str | datetime
Comparison = Literal["gt", "gte", "lt", "lte"]


def kind_of(value: Any) -> Kind | None:
    """The comparison kind of a profile or rule value; None for lists, dicts, None and others."""
    value_type = type(value)
    if value_type is str:
        return "string"
    if value_type is int or value_type is float:
        return "number"
    if value_type is bool:
        return "bool"
    if value_type is datetime and value.tzinfo is not None:
        return "datetime"
    return None


def scalar_equals(value: Any, expected: Scalar) -> bool:
    """Equality within one kind: `1 == 1.0`, but `True != 1` and `"1" != 1`."""
    return kind_of(value) == kind_of(expected) and value == expected


def scalar_compare(value: Any, op: Comparison, bound: Scalar) -> bool:
    """`value <op> bound` when both are of the same orderable kind, else False."""
    kind = kind_of(value)
    if kind is None or kind == "bool" or kind != kind_of(bound):
        return False
    if op == "gt":
        return bool(value > bound)
    if op == "gte":
        return bool(value >= bound)
    if op == "lt":
        return bool(value < bound)
    return bool(value <= bound)


def value_is(value: Any, expected: Scalar) -> bool:
    """`is`: the value, or one element of a list value, equals `expected`."""
    if type(value) is list:
        return any(scalar_equals(item, expected) for item in value)
    return scalar_equals(value, expected)


def value_compare(value: Any, op: Comparison, bound: Scalar) -> bool:
    """An ordering comparison; a list matches when one element does."""
    if type(value) is list:
        return any(scalar_compare(item, op, bound) for item in value)
    return scalar_compare(value, op, bound)


def value_contains(value: Any, needle: Scalar) -> bool:
    """`contains`: substring of a string (case-sensitive), or an element of a list."""
    if type(value) is str:
        return type(needle) is str and needle in value
    if type(value) is list:
        return any(scalar_equals(item, needle) for item in value)
    return False


def value_starts_with(value: Any, prefix: str) -> bool:
    """A string, or one string element of a list, starts with `prefix`."""
    if type(value) is str:
        return value.startswith(prefix)
    if type(value) is list:
        return any(type(item) is str and item.startswith(prefix) for item in value)
    return False


def value_ends_with(value: Any, suffix: str) -> bool:
    """A string, or one string element of a list, ends with `suffix`."""
    if type(value) is str:
        return value.endswith(suffix)
    if type(value) is list:
        return any(type(item) is str and item.endswith(suffix) for item in value)
    return False


def latest_datetime(value: Any) -> datetime | None:
    """The latest aware datetime in a value or in a list value, else None."""
    if type(value) is datetime:
        return value if value.tzinfo is not None else None
    if type(value) is list:
        latest: datetime | None = None
        for item in value:
            if (
                type(item) is datetime
                and item.tzinfo is not None
                and (latest is None or item > latest)
            ):
                latest = item
        return latest
    return None


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or float that is not a bool."""
    value_type = type(value)
    return value_type is int or value_type is float
