"""Examples of the integration, import and export routes' answers (`routes/sync.py`)."""

from typing import Any

from audience_api.routes.examples import AUDIENCE_ID, CREATED_AT, PROJECT_ID, UPDATED_AT

KLAVIYO: dict[str, Any] = {
    "type": "klaviyo",
    "project_id": PROJECT_ID,
    "api_key": "****9f2c",
    "key_last4": "9f2c",
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
}

SYNCED_AUDIENCE: dict[str, Any] = {
    "id": "aud_4e5f6a7b8c9d0e1f",
    "project_id": PROJECT_ID,
    "name": "Newsletter",
    "description": "Synced from Klaviyo list Xy7kQ2",
    "kind": "synced",
    "type": "events",
    "criteria": None,
    "input": None,
    "rule": None,
    "status": "syncing",
    "user_count": 0,
    "user_count_is_estimate": True,
    "as_of": CREATED_AT,
    "refresh_schedule": "daily",
    "group_id": None,
    "mode": "preview",
    "columns": None,
    "unload_format": "csv",
    "created_at": CREATED_AT,
    "updated_at": CREATED_AT,
    "sync_source": {"type": "klaviyo", "list_id": "Xy7kQ2"},
}

IMPORTED_LISTS: dict[str, Any] = {"items": [SYNCED_AUDIENCE]}

SYNC_STARTED: dict[str, Any] = {
    "run_id": "run_6a7b8c9d0e1f2a3b",
    "audience_id": "aud_4e5f6a7b8c9d0e1f",
    "status": "queued",
    "mode": "full",
}

SYNC_STATUS: dict[str, Any] = {
    "audience_id": "aud_4e5f6a7b8c9d0e1f",
    "sync_source": {"type": "klaviyo", "list_id": "Xy7kQ2"},
    "in_progress": False,
    "last_success_at": "2025-06-02T09:31:12Z",
    "last_full_at": "2025-06-02T09:31:12Z",
    "next_refresh_at": "2025-06-03T09:00:00Z",
    "run": {
        "run_id": "run_6a7b8c9d0e1f2a3b",
        "mode": "full",
        "trigger": "api",
        "status": "completed",
        "pages": 3,
        "profiles": 250,
        "entered": 250,
        "exited": 0,
        "resumes": 0,
        "rows_imported": 250,
        "rows_total": 250,
        "progress": 1.0,
        "error": None,
        "created_at": CREATED_AT,
        "finished_at": "2025-06-02T09:31:12Z",
    },
}

IMPORT_STARTED: dict[str, Any] = {"import_id": "imp_7b8c9d0e1f2a3b4c", "status": "queued"}

IMPORT_STATUS: dict[str, Any] = {
    "import_id": "imp_7b8c9d0e1f2a3b4c",
    "audience_id": AUDIENCE_ID,
    "status": "completed",
    "rows_total": 1000,
    "rows_imported": 998,
    "rows_failed": 2,
    "progress": 1.0,
    "errors": [{"row": 17, "message": "no user_id, email or phone"}],
    "error": None,
    "created_at": CREATED_AT,
    "finished_at": UPDATED_AT,
}

EXPORT_STARTED: dict[str, Any] = {"export_id": "exp_8c9d0e1f2a3b4c5d", "status": "queued"}

EXPORT_STATUS: dict[str, Any] = {
    "export_id": "exp_8c9d0e1f2a3b4c5d",
    "audience_id": AUDIENCE_ID,
    "status": "completed",
    "format": "csv",
    "columns": ["user_id", "email"],
    "include_traits": False,
    "trigger": "api",
    "rows_total": 1284,
    "row_count": 1284,
    "rows_exported": 1284,
    "progress": 1.0,
    "bytes": 48213,
    "error": None,
    "created_at": CREATED_AT,
    "finished_at": UPDATED_AT,
}

EXPORT_FILE = "user_id,email\nu_1001,grace@example.com\nu_1042,ada@example.com\n"
