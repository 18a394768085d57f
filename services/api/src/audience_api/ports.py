"""The gateway's ports: what the services need from storage and the broker."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from audience_shared.events import AudienceChanged, UserEventBase
from audience_shared.rules import Group


class EventPublisher(Protocol):
    async def publish_user_events(self, events: Sequence[UserEventBase]) -> None: ...

    async def publish_audience_changed(self, event: AudienceChanged) -> None: ...

    async def is_ready(self) -> bool: ...


class AudienceRepository(Protocol):
    async def insert(self, audience: dict[str, Any]) -> None: ...

    async def get(self, project_id: str, audience_id: str) -> dict[str, Any] | None: ...

    async def page(
        self,
        project_id: str,
        first: int,
        after: str | None,
        kind: str | None = None,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        """Live audiences in id order after `after`, optionally of one kind or whose name
        contains `search` (case-insensitive)."""
        ...

    async def imports_of(
        self, audience_ids: Sequence[str], per_audience: int
    ) -> dict[str, list[dict[str, Any]]]: ...

    async def state(self, audience_id: str) -> dict[str, Any] | None: ...

    async def states(self, audience_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The evaluator state of several audiences in one read, by audience id."""
        ...

    async def update(
        self, audience_id: str, expected_version: int, fields: dict[str, Any]
    ) -> bool: ...

    async def rules_of_project(self, project_id: str) -> list[dict[str, Any]]: ...

    async def claim_refresh(self, audience_id: str, version: int, at: datetime) -> bool:
        """Record the refresh that makes `version`; False when another request already did."""
        ...

    async def history_points(self, point_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Size-history points by id (`audience_id|hour`), in time order."""
        ...

    async def members(
        self, audience_id: str, first: int, after: str | None, search: str | None
    ) -> list[dict[str, Any]]: ...


class KeyRepository(Protocol):
    async def find_by_hash(self, key_hash: str) -> dict[str, Any] | None: ...

    async def upsert(self, key: dict[str, Any]) -> None: ...

    def forget_cached(self) -> None:
        """Drop remembered lookups (a key was revoked or changed)."""
        ...


class TenancyRepository(Protocol):
    async def insert_project(self, project: dict[str, Any]) -> None: ...

    async def project(self, project_id: str) -> dict[str, Any] | None: ...

    async def projects(self, organization_id: str) -> list[dict[str, Any]]: ...

    async def keys(self, organization_id: str, project_id: str | None) -> list[dict[str, Any]]: ...

    async def revoke_key(self, key_id: str, at: datetime) -> None: ...


class ProfileReader(Protocol):
    async def preview(
        self, project_id: str, rule: Group, now: datetime, sample: int
    ) -> tuple[int, list[str]]: ...

    async def count(self, project_id: str, rule: Group, now: datetime) -> int: ...

    async def matching_ids(self, project_id: str, rule: Group, now: datetime) -> set[str]: ...

    async def member_ids(self, audience_id: str) -> set[str]: ...

    async def profile(self, project_id: str, user_id: str) -> dict[str, Any] | None: ...
