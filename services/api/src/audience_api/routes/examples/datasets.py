"""Examples of the dataset routes' answers (`routes/datasets.py`)."""

from typing import Any

from audience_api.routes.examples import CREATED_AT, PROJECT_ID, UPDATED_AT

IMPORT_STARTED: dict[str, Any] = {
    "import_id": "imp_9d0e1f2a3b4c5d6e",
    "dataset": "orders",
    "status": "queued",
    "key": "user_id",
    "fields": ["lifetime_value", "last_order_at"],
}

IMPORT_STATUS: dict[str, Any] = {
    **IMPORT_STARTED,
    "status": "completed",
    "rows_total": 500,
    "rows_imported": 499,
    "rows_failed": 1,
    "progress": 1.0,
    "errors": [{"row": 42, "message": "unknown user"}],
    "error": None,
    "created_at": CREATED_AT,
    "finished_at": UPDATED_AT,
}

DATASET: dict[str, Any] = {
    "name": "orders",
    "project_id": PROJECT_ID,
    "fields": ["last_order_at", "lifetime_value"],
    "created_at": CREATED_AT,
    "updated_at": UPDATED_AT,
}

DATASETS: dict[str, Any] = {"items": [DATASET]}
