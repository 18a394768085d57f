"""Examples of the probes' answers (`routes/health.py`)."""

from typing import Any

HEALTHY: dict[str, Any] = {"status": "ok"}

READY: dict[str, Any] = {"status": "ready", "checks": {"store": True, "broker": True}}
