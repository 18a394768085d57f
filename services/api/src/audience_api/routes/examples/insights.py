"""Examples of the preview, user and explanation routes' answers (`routes/insights.py`)."""

from typing import Any

from audience_api.routes.examples import AUDIENCE_ID, PROJECT_ID
from audience_api.routes.examples.audiences import RULE

PREVIEW: dict[str, Any] = {
    "user_count": 1284,
    "sample": ["u_1001", "u_1007", "u_1042"],
    "rule": RULE,
}

PREVIEW_CHANGE: dict[str, Any] = {
    "entering": 57,
    "leaving": 12,
    "staying": 1272,
    "samples": {
        "entering": ["u_2003", "u_2011"],
        "leaving": ["u_1007"],
        "staying": ["u_1001", "u_1042"],
    },
    "rule": {
        "match": "all",
        "negate": False,
        "rules": [
            {"type": "trait", "field": "plan", "operator": "in", "value": ["premium", "pro"]},
            {"type": "trait", "field": "last_active", "operator": "within_last", "value": "7d"},
        ],
    },
}

USER: dict[str, Any] = {
    "user_id": "u_1042",
    "project_id": PROJECT_ID,
    "traits": {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "plan": "premium",
        "last_active": "2025-06-02T08:55:00Z",
    },
    "first_seen": "2025-03-14T10:02:11Z",
    "last_seen": "2025-06-02T08:55:00Z",
    "event_count": 214,
    "events": {
        "app_open": {"count": 180, "last_at": "2025-06-02T08:55:00Z"},
        "purchase": {"count": 34, "last_at": "2025-05-30T19:12:40Z"},
    },
    "audiences": [AUDIENCE_ID],
}

EXPLANATION: dict[str, Any] = {
    "audience_id": AUDIENCE_ID,
    "user_id": "u_1042",
    "matched": True,
    "member": True,
    "tree": {
        "type": "group",
        "criteria": "Users with plan = premium AND last_active within 7 days",
        "outcome": True,
        "next_change_at": "2025-06-09T08:55:00Z",
        "match": "all",
        "negate": False,
        "rules": [
            {
                "type": "trait",
                "criteria": "plan = premium",
                "outcome": True,
                "next_change_at": None,
                "field": "plan",
                "operator": "is",
                "value": "premium",
                "observed": "premium",
            },
            {
                "type": "trait",
                "criteria": "last_active within 7 days",
                "outcome": True,
                "next_change_at": "2025-06-09T08:55:00Z",
                "field": "last_active",
                "operator": "within_last",
                "value": "7d",
                "observed": "2025-06-02T08:55:00Z",
            },
        ],
    },
}
