"""Durations such as `7d`, `12h`, `30m`, `2w`: their canonical text, timedelta and English words."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhdw])$")

_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_WORDS = {"m": "minute", "h": "hour", "d": "day", "w": "week"}
_WORD_UNITS = {
    "m": "m",
    "h": "h",
    "d": "d",
    "w": "w",
    "minute": "m",
    "minutes": "m",
    "min": "m",
    "mins": "m",
    "hour": "h",
    "hours": "h",
    "hr": "h",
    "hrs": "h",
    "day": "d",
    "days": "d",
    "week": "w",
    "weeks": "w",
}


def is_duration(text: str) -> bool:
    """Whether `text` is a canonical duration (`<positive int><m|h|d|w>`)."""
    return _DURATION.match(text) is not None


@lru_cache(maxsize=4096)
def parse_duration(text: str) -> timedelta:
    """`"7d"` → 7 days. Raises ValueError on anything that is not a canonical duration."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 12h, 7d or 2w")
    return timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])


def duration_from_words(amount: int, unit_word: str) -> str:
    """`(7, "days")` → `"7d"`; the unit word is case-insensitive."""
    unit = _WORD_UNITS.get(unit_word.lower())
    if unit is None:
        raise ValueError(f"unknown time unit {unit_word!r}")
    text = f"{amount}{unit}"
    if not is_duration(text):
        raise ValueError(f"{amount} {unit_word} is not a positive duration")
    return text


def duration_words(text: str) -> str:
    """`"7d"` → `"7 days"`, `"1h"` → `"1 hour"`."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration")
    amount = int(found.group(1))
    word = _UNIT_WORDS[found.group(2)]
    return f"{amount} {word}" if amount == 1 else f"{amount} {word}s"


UNIT_WORDS: frozenset[str] = frozenset(_WORD_UNITS)
