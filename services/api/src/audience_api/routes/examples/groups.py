"""Examples of the group, loyalty tier and segment routes' answers (`routes/groups.py`)."""

from typing import Any

from audience_api.routes.examples import CREATED_AT, GROUP_ID, PROJECT_ID, UPDATED_AT

SEGMENT: dict[str, Any] = {
    "id": "5d1c8e7a-2f4b-4c3d-9e8f-1a2b3c4d5e6f",
    "project_id": PROJECT_ID,
    "management_type": "selfmanaged",
    "name": "Seoul women 20s",
    "no": 7,
    "owner_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
    "approximated_size": 312,
    "description": None,
    "properties": {"city": ["Seoul"], "gender": ["F"]},
    "deprecated_properties": {},
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}


def _tier_audience(audience_id: str, name: str, low: float, high: float | None) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = [
        {"type": "trait", "field": "total_order_value", "operator": "gte", "value": low}
    ]
    if high is not None:
        conditions.append(
            {"type": "trait", "field": "total_order_value", "operator": "lt", "value": high}
        )
    rule = {"match": "all", "negate": False, "rules": conditions}
    return {
        "id": audience_id,
        "project_id": PROJECT_ID,
        "name": name,
        "description": None,
        "kind": "dynamic",
        "type": "events",
        "criteria": None,
        "input": {"form": "filter", "value": rule},
        "rule": rule,
        "status": "ready",
        "user_count": 0,
        "user_count_is_estimate": False,
        "as_of": UPDATED_AT,
        "refresh_schedule": "realtime",
        "group_id": GROUP_ID,
        "mode": "preview",
        "columns": None,
        "unload_format": "csv",
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
    }


_BANDS = [
    ("aud_0b1c2d3e4f5a6b7c", "Bronze", 0.0, 100.0),
    ("aud_1c2d3e4f5a6b7c8d", "Silver", 100.0, 500.0),
    ("aud_2d3e4f5a6b7c8d9e", "Gold", 500.0, None),
]

LOYALTY_GROUP: dict[str, Any] = {
    "id": GROUP_ID,
    "project_id": PROJECT_ID,
    "kind": "loyalty_tiers",
    "name": "Loyalty",
    "metric": "total_order_value",
    "tiers": [
        {"name": name, "min": low, "max": high, "audience_id": audience_id}
        for audience_id, name, low, high in _BANDS
    ],
    "audiences": [
        {**_tier_audience(audience_id, name, low, high), "user_count": count}
        for (audience_id, name, low, high), count in zip(_BANDS, [812, 240, 37], strict=True)
    ],
    "created_at": CREATED_AT,
    "updated_at": UPDATED_AT,
}

GROUP_MEMBERS: dict[str, Any] = {
    "items": [
        {
            "user_id": "u_1042",
            "audience_id": "aud_2d3e4f5a6b7c8d9e",
            "email": "ada@example.com",
            "phone": "+14155550142",
            "full_name": "Ada Lovelace",
            "joined_at": "2025-06-02T09:30:00.871000Z",
        }
    ],
    "page_info": {
        "has_next_page": True,
        "end_cursor": "eyJ1c2VyX2lkIjoidV8xMDQyIiwiYXVkaWVuY2VfaWQiOiJhdWRfMmQzZSJ9.Qm3v",
    },
}
