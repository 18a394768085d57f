"""Seed 003 segments: a properties rule saved as an audience with a UUID id and a per-project
sequence number, answered in the seed's own shape."""

import uuid
from typing import Any, Protocol

from audience_api.services import AudienceService, Principal, rule_from_input

Document = dict[str, Any]


class SegmentNumbers(Protocol):
    async def next_segment_no(self, project_id: str) -> int: ...


class SegmentService:
    def __init__(self, numbers: SegmentNumbers, audiences: AudienceService) -> None:
        self._numbers = numbers
        self._audiences = audiences

    async def create(self, principal: Principal, payload: Document) -> Document:
        principal.require_write()
        project_id = principal.project_for(payload.get("project_id"))
        properties = payload.get("properties") or {}
        # Validated before a number is spent, so a bad rule leaves no gap in the sequence.
        form, value, rule = rule_from_input({"properties": properties})
        number = await self._numbers.next_segment_no(project_id)
        segment = {
            "management_type": payload["management_type"],
            "owner_id": str(payload["owner_id"]),
            "no": number,
            "properties": properties,
            "deprecated_properties": payload.get("deprecated_properties") or {},
        }
        audience = await self._audiences.insert_rule_audience(
            project_id,
            payload["name"],
            {"form": form, "value": value},
            rule,
            audience_id=str(uuid.uuid4()),
            extra={"description": payload.get("description"), "segment": segment},
        )
        size = await self._audiences.estimate(project_id, rule)
        return {
            "id": audience["_id"],
            "project_id": project_id,
            "management_type": segment["management_type"],
            "name": audience["name"],
            "no": number,
            "owner_id": segment["owner_id"],
            # Computed from the profiles now; a size the client sent is not trusted.
            "approximated_size": size,
            "description": audience["description"],
            "properties": properties,
            "deprecated_properties": segment["deprecated_properties"],
            "created_at": audience["created_at"],
            "updated_at": audience["updated_at"],
        }
