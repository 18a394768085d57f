"""Examples of the audience routes' answers (`routes/audiences.py`)."""

from typing import Any

from audience_api.routes.examples import AUDIENCE_ID, CREATED_AT, PROJECT_ID, UPDATED_AT

CRITERIA = "Users with plan=premium AND last_active within 7 days"

RULE: dict[str, Any] = {
    "match": "all",
    "negate": False,
    "rules": [
        {"type": "trait", "field": "plan", "operator": "is", "value": "premium"},
        {"type": "trait", "field": "last_active", "operator": "within_last", "value": "7d"},
    ],
}

AUDIENCE: dict[str, Any] = {
    "id": AUDIENCE_ID,
    "project_id": PROJECT_ID,
    "name": "Active Premium Users",
    "description": None,
    "kind": "dynamic",
    "type": "events",
    "criteria": CRITERIA,
    "input": {"form": "criteria", "value": CRITERIA},
    "rule": RULE,
    "status": "ready",
    "user_count": 1284,
    "user_count_is_estimate": False,
    "as_of": UPDATED_AT,
    "refresh_schedule": "realtime",
    "group_id": None,
    "mode": "preview",
    "columns": None,
    "unload_format": "csv",
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}

AUDIENCE_WITH_RELATIONS: dict[str, Any] = {
    **AUDIENCE,
    "rules": {"input": AUDIENCE["input"], "rule": RULE, "criteria": CRITERIA},
    "imports": [],
    "sync_source": None,
}

AUDIENCE_PAGE: dict[str, Any] = {
    "items": [AUDIENCE],
    "page_info": {
        "has_next_page": True,
        "end_cursor": "eyJpZCI6ImF1ZF84YzFkMmUzZjRhNWI2YzdkIn0.3q2-7w",
    },
}

_EU_CRITERIA = "Users with plan=premium AND region=EU"

UPDATED_AUDIENCE: dict[str, Any] = {
    **AUDIENCE,
    "name": "Active Premium Users (EU)",
    "criteria": _EU_CRITERIA,
    "input": {"form": "criteria", "value": _EU_CRITERIA},
    "rule": {
        "match": "all",
        "negate": False,
        "rules": [
            {"type": "trait", "field": "plan", "operator": "is", "value": "premium"},
            {"type": "trait", "field": "region", "operator": "is", "value": "EU"},
        ],
    },
    "status": "pending",
    "user_count_is_estimate": True,
    "updated_at": "2025-06-03T14:05:00Z",
}

COUNT: dict[str, Any] = {"count": 1284, "as_of": UPDATED_AT}

STATUS: dict[str, Any] = {
    "status": "ready",
    "progress": 1.0,
    "last_refreshed_at": UPDATED_AT,
    "next_refresh_at": None,
    "error": None,
}

MEMBERS: dict[str, Any] = {
    "items": [
        {
            "user_id": "u_1042",
            "email": "ada@example.com",
            "phone": "+14155550142",
            "full_name": "Ada Lovelace",
            "joined_at": "2025-06-02T09:30:00.871000Z",
        }
    ],
    "page_info": {"has_next_page": False, "end_cursor": "eyJ1c2VyX2lkIjoidV8xMDQyIn0.Yk9x2Q"},
}

HISTORY: list[dict[str, Any]] = [
    {"at": "2025-06-02T09:00:00Z", "count": 1270, "entered": 1270, "exited": 0},
    {"at": "2025-06-02T10:00:00Z", "count": 1284, "entered": 19, "exited": 5},
]

REFRESH: dict[str, Any] = {
    "audience_id": AUDIENCE_ID,
    "status": "building",
    "requested_at": "2025-06-03T08:00:00Z",
}
