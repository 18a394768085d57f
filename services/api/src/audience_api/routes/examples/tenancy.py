"""Examples of the project and key routes' answers (`routes/tenancy.py`)."""

from typing import Any

from audience_api.routes.examples import CREATED_AT, ORGANIZATION_ID, PROJECT_ID

PROJECT: dict[str, Any] = {
    "id": PROJECT_ID,
    "organization_id": ORGANIZATION_ID,
    "name": "Web shop",
    "created_at": CREATED_AT,
}

PROJECTS: dict[str, Any] = {"items": [PROJECT]}

KEY: dict[str, Any] = {
    "id": "key_0e1f2a3b4c5d6e7f",
    "name": "backend",
    "prefix": "sk_live_Qm9v",
    "organization_id": ORGANIZATION_ID,
    "project_id": PROJECT_ID,
    "scope": "admin",
    "rate_limit": {"per_second": 20.0, "burst": 40},
    "created_at": CREATED_AT,
    "revoked_at": None,
}

# The key in clear text is in this answer only; the store keeps its hash.
CREATED_KEY: dict[str, Any] = {**KEY, "key": "sk_live_Qm9vYmFyYmF6cXV4cXV1eGNvcmdl"}

KEYS: dict[str, Any] = {"items": [KEY]}
