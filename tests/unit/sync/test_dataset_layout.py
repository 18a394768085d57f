"""Dataset CSV rows: the key column, field names, typed values and row errors."""

import pytest

from audience_sync.datasets import DatasetLayout, dataset_value
from audience_sync.errors import JobFailed
from audience_sync.services import Identity


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("42", 42),
        ("-7", -7),
        ("40.5", 40.5),
        ("1e3", 1000.0),
        ("TRUE", True),
        ("false", False),
        ("  ", None),
        ("gold", "gold"),
        ("2025-01-31", "2025-01-31"),  # date-times are coerced where every trait is
        ("1234567890123456789012", float("1234567890123456789012")),  # past int64: a float
        ("nan", "nan"),
        ("007", 7),
    ],
)
def test_dataset_value__types_cells(cell: str, value: object) -> None:
    assert dataset_value(cell) == value


def test_layout__email_key__other_columns_are_fields() -> None:
    layout = DatasetLayout.from_header(["Email", "Lifetime Value", "tier"], "email")

    identity, fields = layout.parse([" Ann@Example.com", "120", ""])

    assert identity == Identity(email="Ann@Example.com")
    assert fields == {"lifetime_value": 120, "tier": None}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["", "1"], "no user_id"),
        (["u1"], "expected 2 fields, found 1"),
        (["u" * 201, "1"], "user_id is longer than 200 characters"),
    ],
)
def test_layout__bad_rows__say_why(values: list[str], message: str) -> None:
    layout = DatasetLayout.from_header(["user_id", "ltv"], "user_id")
    with pytest.raises(ValueError, match=message):
        layout.parse(values)


def test_layout__header_without_the_key__fails_the_import() -> None:
    with pytest.raises(JobFailed) as failed:
        DatasetLayout.from_header(["email", "ltv"], "user_id")
    assert failed.value.code == "key_column_missing"
