"""Examples of the native ingestion routes' bodies and answers (`routes/ingest.py`)."""

from typing import Any

IDENTIFY: dict[str, Any] = {
    "user_id": "u_1042",
    "traits": {"email": "ada@example.com", "plan": "premium", "total_orders": 34},
}

EVENT: dict[str, Any] = {
    "user_id": "u_1042",
    "event": "purchase",
    "properties": {"order_id": "ord_981", "value": 49.9, "currency": "EUR"},
    "timestamp": "2025-06-02T09:30:00Z",
}

EVENT_BATCH: dict[str, Any] = {
    "batch": [EVENT, {"user_id": "u_1043", "event": "app_open"}],
}

ACCEPTED: dict[str, Any] = {"accepted": 2, "errors": []}
