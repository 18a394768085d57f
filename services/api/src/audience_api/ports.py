"""The gateway's ports: what the services need from storage and the broker."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from audience_shared.events import AudienceChanged, UserEventBase


class EventPublisher(Protocol):
    async def publish_user_events(self, events: Sequence[UserEventBase]) -> None: ...

    async def publish_audience_changed(self, event: AudienceChanged) -> None: ...

    async def is_ready(self) -> bool: ...


class AudienceRepository(Protocol):
    async def insert(self, audience: dict[str, Any]) -> None: ...

    async def get(self, project_id: str, audience_id: str) -> dict[str, Any] | None: ...

    async def list(
        self, project_id: str, first: int, after: str | None
    ) -> list[dict[str, Any]]: ...

    async def state(self, audience_id: str) -> dict[str, Any] | None: ...


class KeyRepository(Protocol):
    async def find_by_hash(self, key_hash: str) -> dict[str, Any] | None: ...

    async def upsert(self, key: dict[str, Any]) -> None: ...


class TenancyRepository(Protocol):
    async def insert_project(self, project: dict[str, Any]) -> None: ...

    async def project(self, project_id: str) -> dict[str, Any] | None: ...

    async def projects(self, organization_id: str) -> list[dict[str, Any]]: ...

    async def keys(
        self, organization_id: str, project_id: str | None
    ) -> list[dict[str, Any]]: ...

    async def revoke_key(self, key_id: str, at: datetime) -> None: ...
