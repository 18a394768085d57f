"""Seed 002 audience groups and loyalty tiers: a group of audiences read, paged and deleted as
one; a loyalty-tier group holds one audience per value band of a metric."""

import itertools
import math
from collections.abc import Sequence
from typing import Any, Protocol

from audience_api.errors import InvalidRequest, NotFound
from audience_api.services import AudienceService, Principal, full_name, new_id, utcnow
from audience_shared import rules

Document = dict[str, Any]


class GroupRepository(Protocol):
    async def insert_group(self, group: Document) -> None: ...

    async def group(self, project_id: str, group_id: str) -> Document | None: ...

    async def update_group(self, group_id: str, fields: Document) -> None: ...

    async def delete_group(self, group_id: str) -> None: ...

    async def audiences_in_group(self, project_id: str, group_id: str) -> list[Document]: ...

    async def members(
        self,
        audience_ids: Sequence[str],
        first: int,
        after: tuple[str, str] | None,
        search: str | None,
    ) -> list[Document]: ...


def tier_rule(metric: str, low: float, high: float | None) -> rules.Group:
    """metric >= low AND metric < high: half-open bands, so adjacent tiers share no user."""
    conditions: list[dict[str, Any]] = [
        {"type": "trait", "field": metric, "operator": "gte", "value": low}
    ]
    if high is not None:
        conditions.append({"type": "trait", "field": metric, "operator": "lt", "value": high})
    rule = rules.Group.model_validate({"match": "all", "rules": conditions})
    rules.validate_rule(rule)
    return rule


def check_tiers(tiers: Sequence[Document]) -> list[Document]:
    """Tiers sorted by `min`; a 400 when a band is empty, names repeat, or bands overlap."""
    names = [tier["name"] for tier in tiers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest("duplicate_tier_names", "Tier names must be unique", repeated)
    for tier in tiers:
        if tier.get("max") is not None and tier["max"] <= tier["min"]:
            raise InvalidRequest(
                "invalid_tier", f"Tier {tier['name']!r} needs max greater than min", tier
            )
    ordered = sorted(tiers, key=lambda tier: tier["min"])
    for lower, upper in itertools.pairwise(ordered):
        lower_max = math.inf if lower.get("max") is None else lower["max"]
        if lower_max > upper["min"]:
            raise InvalidRequest(
                "tiers_overlap",
                f"Tiers {lower['name']!r} and {upper['name']!r} overlap",
                {"tiers": [lower["name"], upper["name"]]},
            )
    return ordered


class GroupService:
    def __init__(self, groups: GroupRepository, audiences: AudienceService) -> None:
        self._groups = groups
        self._audiences = audiences

    async def get(self, principal: Principal, group_id: str, project: str | None) -> Document:
        project_id = principal.project_for(project)
        group, members = await self._load(project_id, group_id)
        return await self._resource(project_id, group_id, group, members)

    async def members(
        self,
        principal: Principal,
        group_id: str,
        project: str | None,
        first: int,
        after: tuple[str, str] | None,
        search: str | None,
        audience_id: str | None,
    ) -> tuple[list[Document], bool]:
        project_id = principal.project_for(project)
        _group, audiences = await self._load(project_id, group_id)
        ids = [doc["_id"] for doc in audiences]
        if audience_id is not None:
            if audience_id not in ids:
                raise NotFound("audience", audience_id)
            ids = [audience_id]
        docs = await self._groups.members(ids, first + 1, after, search)
        items = [
            {
                "user_id": doc["user_id"],
                "audience_id": doc["audience_id"],
                "email": doc["traits"].get("email"),
                "phone": doc["traits"].get("phone"),
                "full_name": full_name(doc["traits"]),
                "joined_at": doc.get("joined_at"),
            }
            for doc in docs[:first]
        ]
        return items, len(docs) > first

    async def delete(self, principal: Principal, group_id: str, project: str | None) -> None:
        principal.require_write()
        project_id = principal.project_for(project)
        group, audiences = await self._load(project_id, group_id)
        for audience in audiences:
            await self._audiences.archive(audience)
        if group is not None:
            await self._groups.delete_group(group_id)

    async def create_tiers(self, principal: Principal, payload: Document) -> Document:
        principal.require_write()
        project_id = principal.project_for(payload.get("project_id"))
        tiers = check_tiers(payload["tiers"])
        metric = payload["metric"]
        group_id = new_id("grp")
        now = utcnow()
        group = {
            "_id": group_id,
            "project_id": project_id,
            "kind": "loyalty_tiers",
            "name": payload["name"],
            "metric": metric,
            "tiers": [],
            "created_at": now,
            "updated_at": now,
        }
        for tier in tiers:
            group["tiers"].append(await self._create_tier(project_id, group_id, metric, tier))
        await self._groups.insert_group(group)
        return await self.get(principal, group_id, project_id)

    async def update_tiers(
        self, principal: Principal, group_id: str, payload: Document
    ) -> Document:
        """New tiers are created, existing ones (by name) updated, missing ones deleted."""
        principal.require_write()
        project_id = principal.project_for(payload.get("project_id"))
        group, audiences = await self._load(project_id, group_id)
        if group is None or group.get("kind") != "loyalty_tiers":
            raise NotFound("loyalty tier group", group_id)
        tiers = check_tiers(payload["tiers"])
        metric = payload.get("metric") or group["metric"]
        by_id = {doc["_id"]: doc for doc in audiences}
        existing = {
            tier["name"]: by_id[tier["audience_id"]]
            for tier in group["tiers"]
            if tier["audience_id"] in by_id
        }
        kept: list[Document] = []
        for tier in tiers:
            audience = existing.pop(tier["name"], None)
            if audience is None:
                kept.append(await self._create_tier(project_id, group_id, metric, tier))
                continue
            rule = tier_rule(metric, tier["min"], tier.get("max"))
            if audience["rule"] != rule.model_dump(mode="json"):
                await self._audiences.replace_rule(audience, self._input(rule), rule)
            kept.append(self._tier(tier, audience["_id"]))
        for removed in existing.values():
            await self._audiences.archive(removed)
        fields = {"tiers": kept, "metric": metric, "updated_at": utcnow()}
        if payload.get("name"):
            fields["name"] = payload["name"]
        await self._groups.update_group(group_id, fields)
        return await self.get(principal, group_id, project_id)

    async def _create_tier(
        self, project_id: str, group_id: str, metric: str, tier: Document
    ) -> Document:
        rule = tier_rule(metric, tier["min"], tier.get("max"))
        audience = await self._audiences.insert_rule_audience(
            project_id, tier["name"], self._input(rule), rule, group_id=group_id
        )
        return self._tier(tier, audience["_id"])

    @staticmethod
    def _input(rule: rules.Group) -> Document:
        return {"form": "filter", "value": rule.model_dump(mode="json")}

    @staticmethod
    def _tier(tier: Document, audience_id: str) -> Document:
        return {
            "name": tier["name"],
            "min": tier["min"],
            "max": tier.get("max"),
            "audience_id": audience_id,
        }

    async def _load(self, project_id: str, group_id: str) -> tuple[Document | None, list[Document]]:
        group = await self._groups.group(project_id, group_id)
        audiences = await self._groups.audiences_in_group(project_id, group_id)
        if group is None and not audiences:
            raise NotFound("group", group_id)
        return group, audiences

    async def _resource(
        self, project_id: str, group_id: str, group: Document | None, audiences: list[Document]
    ) -> Document:
        group = group or {}
        return {
            "id": group_id,
            "project_id": project_id,
            "kind": group.get("kind", "group"),
            "name": group.get("name"),
            "metric": group.get("metric"),
            "tiers": group.get("tiers"),
            "audiences": await self._audiences.resources(audiences),
            "created_at": group.get("created_at"),
            "updated_at": group.get("updated_at"),
        }
