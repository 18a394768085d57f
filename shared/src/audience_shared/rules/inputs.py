"""Convert the JSON input forms (seed 001 `filter`, seed 004 `filters`, seed 003 `properties`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from audience_shared.rules.errors import RuleError
from audience_shared.rules.limits import MAX_DEPTH, validate_rule
from audience_shared.rules.model import Group, TraitCondition, TraitOperator

FILTERS_OPERATORS = frozenset(
    {"is", "is_not", "contains", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "not_exists"}
)
"""Exactly the operators seed 004 documents for `filters`."""


def _validation_error(exc: ValidationError, where: str) -> RuleError:
    errors = [
        {"loc": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    first = errors[0]
    location = f" at {first['loc']}" if first["loc"] else ""
    return RuleError(
        "invalid_rule",
        f"invalid {where}{location}: {first['message'].removeprefix('Value error, ')}",
        details={"errors": errors},
    )


# Raw nesting beyond this is refused before validation: pydantic would hit its recursion guard
# and report a path thousands of segments long. Canonical depth is checked by validate_rule.
MAX_RAW_DEPTH = 4 * MAX_DEPTH


def _raw_depth(data: Mapping[str, Any]) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping) and isinstance(node.get("rules"), list):
            deepest = max(deepest, depth)
            if deepest > MAX_RAW_DEPTH:
                break
            stack.extend((child, depth + 1) for child in node["rules"])
    return deepest


def rule_from_filter(data: Mapping[str, Any]) -> Group:
    """Seed 001: the nested group JSON itself (`{"match", "negate", "rules"}`), validated."""
    if not isinstance(data, Mapping):
        raise RuleError("invalid_rule", "filter must be an object")
    if _raw_depth(data) > MAX_RAW_DEPTH:
        raise RuleError(
            "rule_too_deep",
            f"rules nest at most {MAX_DEPTH} groups deep",
            details={"limit": MAX_DEPTH},
        )
    try:
        rule = Group.model_validate(dict(data))
    except ValidationError as exc:
        raise _validation_error(exc, "filter") from None
    validate_rule(rule)
    return rule


def _filters_value(operator: str, value: Any) -> Any:
    # Seed 004 stores values as strings and JSON-decodes them on evaluation; accept both forms.
    if isinstance(value, str) and operator in ("gt", "gte", "lt", "lte", "in", "not_in"):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if operator in ("in", "not_in") and isinstance(decoded, list):
            return decoded
        if type(decoded) in (int, float):
            return decoded
    return value


def _filter_condition(index: int, item: Any) -> TraitCondition:
    if not isinstance(item, Mapping):
        raise RuleError(
            "invalid_rule", f"filters[{index}] must be an object", details={"index": index}
        )
    unknown = set(item) - {"field", "operator", "value", "conjunction"}
    if unknown:
        raise RuleError(
            "invalid_rule",
            f"filters[{index}] has unknown keys: {', '.join(sorted(map(str, unknown)))}",
            details={"index": index},
        )
    operator = item.get("operator")
    if operator not in FILTERS_OPERATORS:
        raise RuleError(
            "invalid_rule",
            f"filters[{index}].operator must be one of {', '.join(sorted(FILTERS_OPERATORS))}",
            details={"index": index},
        )
    value = item.get("value")
    if operator in ("exists", "not_exists"):
        # `"value": false` turns the test around; true or nothing keeps it.
        if value is False:
            operator = "not_exists" if operator == "exists" else "exists"
        value = None
    try:
        return TraitCondition(
            field=item.get("field"),
            operator=TraitOperator(operator),
            value=_filters_value(operator, value),
        )
    except ValidationError as exc:
        raise _validation_error(exc, f"filters[{index}]") from None


def rule_from_filters(items: Sequence[Mapping[str, Any]]) -> Group:
    """Seed 004: a flat list joined by each item's `conjunction` with the previous one.

    `conjunction` defaults to "and"; AND binds tighter than OR, so `a AND b OR c` is
    `(a AND b) OR c`. The first item's conjunction is ignored. An empty list matches everyone.
    """
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise RuleError("invalid_rule", "filters must be a list")
    chains: list[list[TraitCondition]] = []
    for index, item in enumerate(items):
        condition = _filter_condition(index, item)
        conjunction = item.get("conjunction", "and") if isinstance(item, Mapping) else "and"
        if not isinstance(conjunction, str) or conjunction.lower() not in ("and", "or"):
            raise RuleError(
                "invalid_rule",
                f'filters[{index}].conjunction must be "and" or "or"',
                details={"index": index},
            )
        if not chains or conjunction.lower() == "or":
            chains.append([condition])
        else:
            chains[-1].append(condition)
    if len(chains) <= 1:
        rule = Group(rules=chains[0] if chains else [])
    else:
        rule = Group(
            match="any",
            rules=[chain[0] if len(chain) == 1 else Group(rules=chain) for chain in chains],
        )
    validate_rule(rule)
    return rule


def rule_from_properties(props: Mapping[str, Any]) -> Group:
    """Seed 003: attribute code → values; AND across attributes, OR within one attribute's values.

    One value becomes `is`, several become `in`. An empty mapping matches everyone.
    """
    if not isinstance(props, Mapping):
        raise RuleError("invalid_rule", "properties must be an object")
    conditions: list[TraitCondition] = []
    for code, raw in props.items():
        values = list(raw) if isinstance(raw, list | tuple) else [raw]
        if not values:
            raise RuleError(
                "invalid_rule",
                f"properties.{code} needs at least one value",
                details={"attribute": code},
            )
        try:
            if len(values) == 1:
                condition = TraitCondition(field=code, operator=TraitOperator.IS, value=values[0])
            else:
                condition = TraitCondition(field=code, operator=TraitOperator.IN, value=values)
        except ValidationError as exc:
            raise _validation_error(exc, f"properties.{code}") from None
        conditions.append(condition)
    rule = Group(rules=conditions)
    validate_rule(rule)
    return rule
