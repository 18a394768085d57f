"""Datasets (seed 001 `type: dataset`): their names, field names, and where their values live.

A dataset row sets traits under `dataset.<name>.<field>` on the user it is keyed to, so rules
read dataset fields as ordinary trait paths in both executors.
"""

import re
from collections.abc import Iterable

# The trait holding every dataset's fields: `traits.dataset.<name>.<field>`.
DATASET_TRAIT = "dataset"
# Columns that name the user a row belongs to, in the order one is picked when several appear.
KEY_COLUMNS = ("user_id", "external_id", "email")
# Names and fields become document field names: no dots, no `$`, nothing to percent-encode.
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_FIELDS = 200
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def field_name(header: str) -> str:
    """A header as a field name: lower case, runs of other characters as `_` ("Lifetime Value"
    is `lifetime_value`); ValueError when nothing usable is left."""
    name = _NOT_NAME.sub("_", header.strip().lower()).strip("_")
    if not FIELD_NAME.match(name):
        raise ValueError(f"column {header!r} cannot be a field name (letters, digits, _)")
    return name


def dataset_fields(paths: Iterable[str]) -> dict[str, set[str]]:
    """The dataset fields among rule field paths: `dataset.scores.ltv` is {"scores": {"ltv"}}.

    A path naming only a dataset (`dataset.scores`) lists it with no fields.
    """
    found: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split(".")
        if parts[0] != DATASET_TRAIT or len(parts) < 2:
            continue
        fields = found.setdefault(parts[1], set())
        if len(parts) > 2:
            fields.add(parts[2])
    return found
