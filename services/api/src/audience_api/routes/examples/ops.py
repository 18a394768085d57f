"""Examples of the ops dashboard routes' answers (`routes/ops.py`)."""

from typing import Any

from audience_api.routes.examples import AUDIENCE_ID, CREATED_AT, UPDATED_AT

PIPELINE: dict[str, Any] = {
    "as_of": UPDATED_AT,
    "consumer_group": "audiences-evaluator",
    "broker": {"available": True, "error": None},
    "services": [
        {"name": "api", "url": None, "status": "ready", "checks": {"store": True, "broker": True}},
        {
            "name": "evaluator",
            "url": "http://127.0.0.1:8081",
            "status": "ready",
            "checks": {"store": True, "broker": True},
            "error": None,
        },
        {"name": "sync", "url": None, "status": "not_configured"},
    ],
    "consumer_lag": [
        {"partition": 0, "end_offset": 10412, "committed": 10410, "lag": 2},
        {"partition": 1, "end_offset": 9876, "committed": 9876, "lag": 0},
    ],
    "totals": {
        "events_produced": 20288,
        "events_processed": 20286,
        "membership_changes": 3120,
        "dead_letters": 0,
    },
}

RUNS: dict[str, Any] = {
    "items": [
        {
            "kind": "import",
            "id": "imp_7b8c9d0e1f2a3b4c",
            "audience_id": AUDIENCE_ID,
            "status": "completed",
            "trigger": None,
            "mode": None,
            "progress": 1.0,
            "rows": {"total": 1000, "imported": 998, "failed": 2},
            "errors": [{"row": 17, "message": "no user_id, email or phone"}],
            "error": None,
            "created_at": CREATED_AT,
            "finished_at": UPDATED_AT,
        }
    ]
}
