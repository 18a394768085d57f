"""Examples of the Segment-compatible routes' answers (`routes/segment.py`)."""

from typing import Any

# What Segment's own tracking API answers, so its SDKs see success.
ACCEPTED: dict[str, Any] = {"success": True}
