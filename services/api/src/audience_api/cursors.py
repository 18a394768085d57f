"""Opaque, tamper-evident page cursors: the position is signed, so an edited cursor is a 400."""

import base64
import hashlib
import hmac
import json
from typing import Any

from audience_api.errors import InvalidRequest


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, position: dict[str, Any]) -> str:
        body = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        signature = hmac.new(self._secret, body, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(signature + body).decode().rstrip("=")

    def decode(self, cursor: str) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            signature, body = raw[:12], raw[12:]
            expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:12]
            if not hmac.compare_digest(signature, expected):
                raise ValueError("signature mismatch")
            position = json.loads(body)
            if not isinstance(position, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise InvalidRequest(
                "invalid_cursor", "The cursor is not one this API issued", {"field": "after"}
            ) from exc
        return position
