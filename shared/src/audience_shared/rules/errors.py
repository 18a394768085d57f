"""The one exception every rule input, validation and compilation failure is reported with."""

from __future__ import annotations

from typing import Any


class RuleError(ValueError):
    """A rule the service cannot accept; the API maps every instance to one 400 shape.

    `code` is stable and machine-readable (`invalid_criteria`, `invalid_rule`, `rule_too_deep`,
    `too_many_conditions`, `window_too_long`, `count_too_large`, `unresolved_audience`).
    `position` is the 1-based column in a criteria string, when there is one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        position: int | None = None,
        expected: list[str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.position = position
        self.expected = expected or []
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The `error` object of the API's 400 body."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.position is not None:
            body["position"] = self.position
        if self.expected:
            body["expected"] = self.expected
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return (
            f"RuleError(code={self.code!r}, message={self.message!r}, position={self.position!r})"
        )
