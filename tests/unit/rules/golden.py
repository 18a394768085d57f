"""Load the golden rule cases in tests/data/rules/*.json (rule, profile, now, expected)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from audience_shared.profile import coerce_trait_value, parse_iso_datetime
from audience_shared.rules import (
    Group,
    parse_criteria,
    rule_from_filter,
    rule_from_filters,
    rule_from_properties,
)

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "data" / "rules"


@dataclass(frozen=True)
class GoldenCase:
    id: str
    rule: Group
    profile: dict[str, Any]
    now: datetime
    matched: bool
    next_change_at: datetime | None


def _rule(case: dict[str, Any]) -> Group:
    if "criteria" in case:
        return parse_criteria(case["criteria"])
    if "filters" in case:
        return rule_from_filters(case["filters"])
    if "properties" in case:
        return rule_from_properties(case["properties"])
    if "filter" in case:
        return rule_from_filter(case["filter"])
    return rule_from_filter(case["rule"])


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = parse_iso_datetime(text)
    assert moment is not None, f"not an ISO date-time: {text!r}"
    return moment


def load_golden_cases() -> list[GoldenCase]:
    cases = []
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        for raw in json.loads(path.read_text())["cases"]:
            now = _moment(raw["now"])
            assert now is not None
            cases.append(
                GoldenCase(
                    id=f"{path.stem}: {raw['name']}",
                    rule=_rule(raw),
                    # Profiles hold date-times as ISO text in JSON, as ingestion receives them.
                    profile=coerce_trait_value(raw["profile"]),
                    now=now,
                    matched=raw["expected"]["matched"],
                    next_change_at=_moment(raw["expected"]["next_change_at"]),
                )
            )
    return cases
