"""Use cases of the gateway: keys and tenancy, audiences, ingestion. No web or driver imports."""

import asyncio
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from audience_api.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from audience_api.ports import (
    AudienceRepository,
    EventPublisher,
    KeyRepository,
    ProfileReader,
    TenancyRepository,
)
from audience_api.rate_limit import RateLimit
from audience_shared import rules
from audience_shared.commands import default_schedule, effective_schedule, next_refresh_at
from audience_shared.events import AudienceChanged, UserEventBase
from audience_shared.history import history_point_id, hours_between
from audience_shared.profile import decode_key

Scope = Literal["admin", "read"]

DEFAULT_HISTORY = timedelta(days=7)
MAX_HISTORY = timedelta(days=366)

# A create that answers with an estimate spends at most this long counting it.
ESTIMATE_SECONDS = 1.0
# A computed size is part of the answer (seed 003 segments): worth waiting for, never faked.
SIZE_SECONDS = 20.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organization key (project_id None) or a key bound to one project."""

    key_id: str
    organization_id: str
    project_id: str | None
    scope: Scope
    # The key's own limit; None means the gateway's default.
    rate_limit: RateLimit | None = None

    def project_for(self, requested: str | None) -> str:
        """The project a project-scoped call acts on, checked against the key's reach."""
        if self.project_id is not None:
            if requested is not None and requested != self.project_id:
                # Never reveal whether another project exists.
                raise NotFound("project", requested)
            return self.project_id
        if requested is None:
            raise InvalidRequest(
                "project_required", "An organization key must name project_id on this call"
            )
        return requested

    def require_write(self) -> None:
        if self.scope != "admin":
            raise Forbidden("read_only_key", "This API key is read-only")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class KeyService:
    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys

    async def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized()
        doc = await self._keys.find_by_hash(hash_key(presented))
        if doc is None or doc.get("revoked_at") is not None:
            raise Unauthorized("The API key is invalid or revoked")
        return Principal(
            key_id=doc["_id"],
            organization_id=doc["organization_id"],
            project_id=doc.get("project_id"),
            scope=doc["scope"],
            rate_limit=RateLimit(**doc["rate_limit"]) if doc.get("rate_limit") else None,
        )

    async def install_key(
        self, key: str, organization_id: str, project_id: str | None, scope: Scope, name: str
    ) -> str:
        """Store a key we were given (bootstrap/demo), idempotently: the same key, the same id."""
        key_hash = hash_key(key)
        key_id = f"key_{key_hash[:16]}"
        await self._keys.upsert(
            {
                "_id": key_id,
                "hash": key_hash,
                "prefix": key[:8],
                "name": name,
                "organization_id": organization_id,
                "project_id": project_id,
                "scope": scope,
                "created_at": utcnow(),
                "revoked_at": None,
            }
        )
        return key_id


RULE_INPUTS = ("criteria", "filter", "filters", "properties")


def rule_from_input(payload: dict[str, Any]) -> tuple[str, Any, rules.Group]:
    """Exactly one of the four rule inputs, compiled to the canonical rule."""
    given = [name for name in RULE_INPUTS if payload.get(name) is not None]
    if len(given) != 1:
        raise InvalidRequest(
            "rule_input_required",
            "Give exactly one of criteria, filter, filters or properties",
            {"given": given},
        )
    form = given[0]
    value = payload[form]
    if form == "criteria":
        rule = rules.parse_criteria(value)
    elif form == "filter":
        rule = rules.rule_from_filter(value)
    elif form == "filters":
        rule = rules.rule_from_filters(value)
    else:
        rule = rules.rule_from_properties(value)
    rules.validate_rule(rule)
    return form, value, rule


INCLUDES = ("rules", "imports", "sync_source")
# Imports listed per audience with `include=imports`, newest first.
INCLUDED_IMPORTS = 10
# Audiences read per store query while filtering a page by status.
STATUS_SCAN_BATCH = 200


@dataclass(frozen=True)
class AudienceFilters:
    """What `GET /v1/audiences` narrows the list to, and the relations it adds."""

    kind: str | None = None
    status: str | None = None
    search: str | None = None
    include: frozenset[str] = frozenset()


class DatasetRuleCheck(Protocol):
    async def check_rule(self, project_id: str, rule: rules.Group) -> None:
        """Raise InvalidRequest unless the rule reads fields of datasets that exist."""
        ...


class AudienceService:
    def __init__(
        self,
        audiences: AudienceRepository,
        publisher: EventPublisher,
        profiles: ProfileReader,
        create_wait_seconds: float,
        datasets: DatasetRuleCheck | None = None,
    ) -> None:
        self._audiences = audiences
        self._publisher = publisher
        self._profiles = profiles
        self._create_wait_seconds = create_wait_seconds
        self._datasets = datasets

    async def create(self, principal: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        principal.require_write()
        project_id = principal.project_for(payload.get("project_id") or payload.get("app_id"))
        kind = payload.get("kind", "dynamic")
        rule_input: dict[str, Any] | None = None
        rule_json: dict[str, Any] | None = None
        audience_id = new_id("aud")
        if kind == "dynamic":
            form, value, rule = rule_from_input(payload)
            rule = await self._resolve_references(project_id, audience_id, rule)
            if payload.get("type") == "dataset":
                await self._check_dataset_rule(project_id, rule)
            rule_input = {"form": form, "value": value}
            rule_json = rule.model_dump(mode="json")
        elif any(payload.get(name) is not None for name in RULE_INPUTS):
            raise InvalidRequest(
                "rule_not_allowed",
                f"A {kind} audience is a list: members come from imports or syncs, not a rule",
            )
        now = utcnow()
        audience: dict[str, Any] = {
            "_id": audience_id,
            "project_id": project_id,
            "name": payload["name"],
            "description": payload.get("description"),
            "kind": kind,
            "type": payload.get("type", "events"),
            "input": rule_input,
            "criteria": payload.get("criteria"),
            "rule": rule_json,
            "rule_version": 1,
            "refresh_schedule": payload.get("refresh_schedule")
            or default_schedule(payload.get("type", "events")),
            "group_id": payload.get("group_id"),
            # Seed 001 unloads: the sync service writes the file once the audience is built.
            "mode": payload.get("mode") or "preview",
            "columns": payload.get("columns"),
            "unload_format": payload.get("unload_format") or "csv",
            "archived": False,
            "created_at": now,
            "updated_at": now,
        }
        await self._audiences.insert(audience)
        await self._publisher.publish_audience_changed(
            AudienceChanged(
                project_id=project_id, audience_id=audience["_id"], change="created", version=1
            )
        )
        state = await self._wait_until_ready(audience["_id"], 1)
        resource = self._resource(audience, state)
        if resource["user_count_is_estimate"] and resource["status"] != "failed":
            # Materialization is still running: say so, with the store's count of the rule now.
            resource["status"] = "building"
            resource["user_count"] = await self._estimate(project_id, rule_json, state)
        return resource

    async def _estimate(
        self, project_id: str, rule_json: dict[str, Any] | None, state: dict[str, Any] | None
    ) -> int:
        """How many profiles the rule matches now; bounded in time, else the partial count."""
        partial = int((state or {}).get("member_count", 0))
        if rule_json is None:
            return partial  # a list fills from imports and syncs, not from a rule
        rule = rules.Group.model_validate(rule_json)
        try:
            return await asyncio.wait_for(
                self._profiles.count(project_id, rule, utcnow()), ESTIMATE_SECONDS
            )
        except TimeoutError:
            return partial

    async def get(
        self,
        principal: Principal,
        audience_id: str,
        project: str | None,
        include: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        audience = await self._audiences.get(principal.project_for(project), audience_id)
        if audience is None:
            raise NotFound("audience", audience_id)
        resource = self._resource(audience, await self._audiences.state(audience_id))
        (resource,) = await self._with_relations([audience], [resource], include)
        return resource

    async def page(
        self,
        principal: Principal,
        project: str | None,
        first: int,
        after: str | None,
        filters: AudienceFilters | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of live audiences in id order; `has_next` says whether more match."""
        filters = filters or AudienceFilters()
        project_id = principal.project_for(project)
        # Status is the evaluator's (audience_state), not a field of the audience: filter it
        # after reading states, reading further batches until the page is full.
        batch = first + 1 if filters.status is None else max(first + 1, STATUS_SCAN_BATCH)
        docs: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        position = after
        while len(items) <= first:
            found = await self._audiences.page(
                project_id, batch, position, filters.kind, filters.search
            )
            states = await self._audiences.states([doc["_id"] for doc in found])
            for doc in found:
                resource = self._resource(doc, states.get(doc["_id"]))
                if filters.status is None or resource["status"] == filters.status:
                    docs.append(doc)
                    items.append(resource)
            if len(found) < batch:
                break
            position = found[-1]["_id"]
        items = await self._with_relations(docs[:first], items[:first], filters.include)
        return items, len(docs) > first

    async def _with_relations(
        self,
        docs: Sequence[dict[str, Any]],
        resources: list[dict[str, Any]],
        include: frozenset[str],
    ) -> list[dict[str, Any]]:
        """Add the relations asked for with `include=` (rules, imports, sync_source)."""
        if not include:
            return resources
        imports = (
            await self._audiences.imports_of([doc["_id"] for doc in docs], INCLUDED_IMPORTS)
            if "imports" in include
            else {}
        )
        for doc, resource in zip(docs, resources, strict=True):
            if "rules" in include:
                resource["rules"] = _rules_relation(doc)
            if "imports" in include:
                resource["imports"] = [_import_summary(i) for i in imports.get(doc["_id"], [])]
            if "sync_source" in include:
                resource["sync_source"] = doc.get("sync_source")
        return resources

    async def count(
        self, principal: Principal, audience_id: str, project: str | None
    ) -> dict[str, Any]:
        resource = await self.get(principal, audience_id, project)
        return {"count": resource["user_count"], "as_of": resource["as_of"]}

    async def update(
        self, principal: Principal, audience_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        principal.require_write()
        audience = await self._owned(principal, audience_id, payload.pop("project_id", None))
        fields: dict[str, Any] = {
            k: v
            for k, v in payload.items()
            if k
            in (
                "name",
                "description",
                "refresh_schedule",
                "group_id",
                "mode",
                "columns",
                "unload_format",
            )
        }
        new_rule = any(payload.get(name) is not None for name in RULE_INPUTS)
        version = audience["rule_version"]
        if new_rule and audience["kind"] != "dynamic":
            raise InvalidRequest("rule_not_allowed", "A list audience takes no rule")
        if new_rule:
            form, value, rule = rule_from_input(payload)
            rule = await self._resolve_references(audience["project_id"], audience_id, rule)
            if audience.get("type") == "dataset":
                await self._check_dataset_rule(audience["project_id"], rule)
            fields.update(
                {
                    "input": {"form": form, "value": value},
                    "criteria": value if form == "criteria" else None,
                    "rule": rule.model_dump(mode="json"),
                    "rule_version": version + 1,
                }
            )
        fields["updated_at"] = utcnow()
        if not await self._audiences.update(audience_id, version, fields):
            raise Conflict("concurrent_update", "The audience changed meanwhile; read it and retry")
        if new_rule:
            await self._publisher.publish_audience_changed(
                AudienceChanged(
                    project_id=audience["project_id"],
                    audience_id=audience_id,
                    change="updated",
                    version=version + 1,
                )
            )
            await self._wait_until_ready(audience_id, version + 1)
        return await self.get(principal, audience_id, audience["project_id"])

    async def insert_rule_audience(
        self,
        project_id: str,
        name: str,
        rule_input: dict[str, Any],
        rule: rules.Group,
        *,
        audience_id: str | None = None,
        group_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Save a dynamic audience whose rule is already compiled and validated, and announce it
        (groups, loyalty tiers and segments create audiences this way, without waiting)."""
        now = utcnow()
        audience: dict[str, Any] = {
            "_id": audience_id or new_id("aud"),
            "project_id": project_id,
            "name": name,
            "description": None,
            "kind": "dynamic",
            "type": "events",
            "input": rule_input,
            "criteria": None,
            "rule": rule.model_dump(mode="json"),
            "rule_version": 1,
            "refresh_schedule": default_schedule("events"),
            "group_id": group_id,
            "archived": False,
            "created_at": now,
            "updated_at": now,
            **(extra or {}),
        }
        await self._audiences.insert(audience)
        await self._publisher.publish_audience_changed(
            AudienceChanged(
                project_id=project_id, audience_id=audience["_id"], change="created", version=1
            )
        )
        return audience

    async def replace_rule(
        self, audience: dict[str, Any], rule_input: dict[str, Any], rule: rules.Group
    ) -> None:
        """A new rule for an audience the caller already owns; it re-materializes."""
        version = audience["rule_version"]
        fields = {
            "input": rule_input,
            "rule": rule.model_dump(mode="json"),
            "rule_version": version + 1,
            "updated_at": utcnow(),
        }
        if not await self._audiences.update(audience["_id"], version, fields):
            raise Conflict("concurrent_update", "The audience changed meanwhile; retry")
        await self._publisher.publish_audience_changed(
            AudienceChanged(
                project_id=audience["project_id"],
                audience_id=audience["_id"],
                change="updated",
                version=version + 1,
            )
        )

    async def resources(self, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        states = await self._audiences.states([doc["_id"] for doc in docs])
        return [self._resource(doc, states.get(doc["_id"])) for doc in docs]

    async def estimate(self, project_id: str, rule: rules.Group) -> int:
        """Profiles the rule matches now, counted by the store (a segment's computed size)."""
        try:
            return await asyncio.wait_for(
                self._profiles.count(project_id, rule, utcnow()), SIZE_SECONDS
            )
        except TimeoutError as exc:
            raise Unavailable("Counting the matching users took too long; retry shortly") from exc

    async def delete(self, principal: Principal, audience_id: str, project: str | None) -> None:
        principal.require_write()
        audience = await self._owned(principal, audience_id, project)
        await self.archive(audience)

    async def archive(self, audience: dict[str, Any]) -> None:
        """Archive an audience: gone from reads; the evaluator removes its members with exits."""
        audience_id = audience["_id"]
        version = audience["rule_version"]
        archived = {"archived": True, "archived_at": utcnow(), "rule_version": version + 1}
        if not await self._audiences.update(audience_id, version, archived):
            raise Conflict("concurrent_update", "The audience changed meanwhile; retry")
        await self._publisher.publish_audience_changed(
            AudienceChanged(
                project_id=audience["project_id"],
                audience_id=audience_id,
                change="deleted",
                version=version + 1,
            )
        )

    async def status(
        self, principal: Principal, audience_id: str, project: str | None
    ) -> dict[str, Any]:
        resource = await self.get(principal, audience_id, project)
        state = await self._audiences.state(audience_id) or {}
        return {
            "status": resource["status"],
            "progress": 1.0 if resource["status"] == "ready" else state.get("progress", 0.0),
            "last_refreshed_at": state.get("last_refreshed_at"),
            "next_refresh_at": next_refresh_at(
                effective_schedule(resource["kind"], resource["refresh_schedule"]), utcnow()
            ),
            "error": state.get("error"),
        }

    async def history(
        self, principal: Principal, audience_id: str, project: str | None, since: datetime | None
    ) -> list[dict[str, Any]]:
        """Hourly size points since `since` (default a week back, at most a year back)."""
        audience = await self._owned(principal, audience_id, project)
        now = utcnow()
        since = _aware(since) if since is not None else now - DEFAULT_HISTORY
        start = max(since, _aware(audience["created_at"]), now - MAX_HISTORY)
        point_ids = [history_point_id(audience_id, hour) for hour in hours_between(start, now)]
        points = await self._audiences.history_points(point_ids)
        return [
            {
                "at": point["at"],
                "count": point.get("count", 0),
                "entered": point.get("entered", 0),
                "exited": point.get("exited", 0),
            }
            for point in points
            if _aware(point["at"]) >= since
        ]

    async def refresh(
        self, principal: Principal, audience_id: str, project: str | None
    ) -> dict[str, Any]:
        """Re-run the build of a rule or list audience; one at a time per audience.

        The refresh takes the next rule version, so the evaluator treats it as a new build (any
        evaluator process may claim it). Requests racing for the same version are told apart by
        the claim insert, not the guarded update: on FerretDB two concurrent guarded updates can
        both succeed.
        """
        principal.require_write()
        audience = await self._owned(principal, audience_id, project)
        state = await self._audiences.state(audience_id) or {}
        version = audience["rule_version"]
        running = state.get("rule_version") != version or state.get("status") in (
            "pending",
            "building",
        )
        now = utcnow()
        if (
            running
            or not await self._audiences.claim_refresh(audience_id, version + 1, now)
            or not await self._audiences.update(
                audience_id, version, {"rule_version": version + 1, "refresh_requested_at": now}
            )
        ):
            raise Conflict(
                "refresh_in_progress",
                "A build or refresh of this audience is running; retry when its status is ready",
                {"status": state.get("status", "pending")},
            )
        await self._publisher.publish_audience_changed(
            AudienceChanged(
                project_id=audience["project_id"],
                audience_id=audience_id,
                change="refresh_requested",
                version=version + 1,
            )
        )
        return {"audience_id": audience_id, "status": "building", "requested_at": now}

    async def kind_of(self, principal: Principal, audience_id: str, project: str | None) -> str:
        return str((await self._owned(principal, audience_id, project))["kind"])

    async def members(
        self,
        principal: Principal,
        audience_id: str,
        project: str | None,
        first: int,
        after: str | None,
        search: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        await self._owned(principal, audience_id, project)
        docs = await self._audiences.members(audience_id, first + 1, after, search)
        items = [
            {
                "user_id": doc["user_id"],
                "email": doc["traits"].get("email"),
                "phone": doc["traits"].get("phone"),
                "full_name": full_name(doc["traits"]),
                "joined_at": doc.get("joined_at"),
            }
            for doc in docs[:first]
        ]
        return items, len(docs) > first

    async def _resolve_references(
        self, project_id: str, audience_id: str, rule: rules.Group
    ) -> rules.Group:
        """Audiences named in the rule get their ids; unknown ones and cycles are a 400."""
        refs = rules.references(rule)
        if not refs.audiences and not refs.audience_names:
            return rule
        others = await self._audiences.rules_of_project(project_id)
        rule = rules.resolve_audience_names(rule, {doc["name"]: doc["_id"] for doc in others})
        known = {doc["_id"] for doc in others}
        unknown = sorted(rules.references(rule).audiences - known - {audience_id})
        if unknown:
            raise InvalidRequest(
                "unknown_audience", "The rule refers to audiences that do not exist", unknown
            )
        depends_on = {
            doc["_id"]: rules.references(rules.Group.model_validate(doc["rule"])).audiences
            for doc in others
            if doc.get("rule")
        }
        depends_on[audience_id] = rules.references(rule).audiences
        cycle = rules.find_audience_cycle(audience_id, depends_on)
        if cycle:
            raise InvalidRequest(
                "audience_cycle", "Audiences may not refer to each other in a cycle", cycle
            )
        return rule

    async def _check_dataset_rule(self, project_id: str, rule: rules.Group) -> None:
        if self._datasets is not None:
            await self._datasets.check_rule(project_id, rule)

    async def _owned(
        self, principal: Principal, audience_id: str, project: str | None
    ) -> dict[str, Any]:
        audience = await self._audiences.get(principal.project_for(project), audience_id)
        if audience is None:
            raise NotFound("audience", audience_id)
        return audience

    async def _wait_until_ready(self, audience_id: str, version: int) -> dict[str, Any] | None:
        """Give materialization a moment so small audiences answer with an exact count."""
        deadline = asyncio.get_running_loop().time() + self._create_wait_seconds
        state = None
        while asyncio.get_running_loop().time() < deadline:
            state = await self._audiences.state(audience_id)
            if state and state.get("rule_version") == version and state.get("status") == "ready":
                return state
            await asyncio.sleep(0.05)
        return state

    @staticmethod
    def _resource(audience: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any]:
        ready = bool(
            state
            and state.get("rule_version") == audience["rule_version"]
            and state.get("status") == "ready"
        )
        status = state.get("status", "pending") if state else "pending"
        if state and state.get("rule_version") != audience["rule_version"]:
            status = "pending"
        return {
            "id": audience["_id"],
            "project_id": audience["project_id"],
            "name": audience["name"],
            "description": audience.get("description"),
            "kind": audience["kind"],
            "type": audience["type"],
            "criteria": audience.get("criteria"),
            "input": audience["input"],
            "rule": audience["rule"],
            "status": status,
            "user_count": (state or {}).get("member_count", 0),
            "user_count_is_estimate": not ready,
            "as_of": (state or {}).get("updated_at") or audience["updated_at"],
            "refresh_schedule": audience["refresh_schedule"],
            "group_id": audience.get("group_id"),
            "mode": audience.get("mode") or "preview",
            "columns": audience.get("columns"),
            "unload_format": audience.get("unload_format") or "csv",
            "created_at": audience["created_at"],
            "updated_at": audience["updated_at"],
        }


def parse_include(raw: str | None) -> frozenset[str]:
    """`include=rules,imports` as a set; an unknown relation is a 400 naming it."""
    if not raw:
        return frozenset()
    names = {name.strip() for name in raw.split(",") if name.strip()}
    unknown = sorted(names - set(INCLUDES))
    if unknown:
        raise InvalidRequest(
            "invalid_include",
            f"include takes a comma-separated list of {', '.join(INCLUDES)}",
            {"unknown": unknown},
        )
    return frozenset(names)


def _rules_relation(audience: dict[str, Any]) -> dict[str, Any] | None:
    """A rule audience's rule as given, canonical, and as a criteria string; None for lists."""
    if audience.get("rule") is None:
        return None
    rule = rules.Group.model_validate(audience["rule"])
    try:
        criteria: str | None = rules.render_criteria(rule)
    except rules.RuleError:
        criteria = None  # a rule the criteria grammar cannot spell (e.g. an unresolved name)
    return {"input": audience.get("input"), "rule": audience["rule"], "criteria": criteria}


def _import_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "import_id": record["_id"],
        "status": record.get("status"),
        "rows_total": record.get("rows_total"),
        "rows_imported": record.get("rows_imported", 0),
        "rows_failed": record.get("rows_failed", 0),
        "created_at": record.get("created_at"),
        "finished_at": record.get("finished_at"),
    }


def _aware(at: datetime) -> datetime:
    """Stored times come back naive from some stores; they are UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def full_name(traits: dict[str, Any]) -> str | None:
    if isinstance(traits.get("full_name"), str):
        return str(traits["full_name"])
    if isinstance(traits.get("name"), str):
        return str(traits["name"])
    parts = [traits.get("first_name"), traits.get("last_name")]
    joined = " ".join(p for p in parts if isinstance(p, str))
    return joined or None


class InsightService:
    """Previews before saving, and why a user is in or out: read-only views over profiles."""

    def __init__(self, profiles: ProfileReader, audiences: AudienceRepository) -> None:
        self._profiles = profiles
        self._audiences = audiences

    async def preview(self, principal: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        project_id = principal.project_for(payload.get("project_id") or payload.get("app_id"))
        _form, _value, rule = rule_from_input(payload)
        count, sample = await self._profiles.preview(project_id, rule, utcnow(), PREVIEW_SAMPLE)
        return {"user_count": count, "sample": sample, "rule": rule.model_dump(mode="json")}

    async def preview_change(
        self, principal: Principal, audience_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        project_id = principal.project_for(payload.get("project_id"))
        audience = await self._audiences.get(project_id, audience_id)
        if audience is None:
            raise NotFound("audience", audience_id)
        _form, _value, rule = rule_from_input(payload)
        would = await self._profiles.matching_ids(project_id, rule, utcnow())
        now_in = await self._profiles.member_ids(audience_id)
        entering, leaving, staying = would - now_in, now_in - would, would & now_in
        return {
            "entering": len(entering),
            "leaving": len(leaving),
            "staying": len(staying),
            "samples": {
                "entering": sorted(entering)[:PREVIEW_SAMPLE],
                "leaving": sorted(leaving)[:PREVIEW_SAMPLE],
                "staying": sorted(staying)[:PREVIEW_SAMPLE],
            },
            "rule": rule.model_dump(mode="json"),
        }

    async def user(self, principal: Principal, user_id: str, project: str | None) -> dict[str, Any]:
        project_id = principal.project_for(project)
        profile = await self._profiles.profile(project_id, user_id)
        if profile is None or profile.get("merged_into"):
            raise NotFound("user", user_id)
        return {
            "user_id": user_id,
            "project_id": project_id,
            "traits": profile.get("traits", {}),
            "first_seen": profile.get("first_seen"),
            "last_seen": profile.get("last_seen"),
            "event_count": profile.get("event_count", 0),
            "events": {
                decode_key(name): {"count": slot.get("count", 0), "last_at": slot.get("last_at")}
                for name, slot in profile.get("events", {}).items()
            },
            "audiences": profile.get("audiences", []),
        }

    async def explain(
        self, principal: Principal, user_id: str, audience_id: str, project: str | None
    ) -> dict[str, Any]:
        project_id = principal.project_for(project)
        audience = await self._audiences.get(project_id, audience_id)
        if audience is None:
            raise NotFound("audience", audience_id)
        profile = await self._profiles.profile(project_id, user_id)
        if profile is None:
            raise NotFound("user", user_id)
        if audience.get("rule") is None:
            member = audience_id in profile.get("lists", [])
            return {
                "audience_id": audience_id,
                "user_id": user_id,
                "matched": member,
                "member": audience_id in profile.get("audiences", []),
                "tree": {"type": "list", "outcome": member},
            }
        rule = rules.Group.model_validate(audience["rule"])
        tree = rules.explain(rule, profile, utcnow())
        return {
            "audience_id": audience_id,
            "user_id": user_id,
            "matched": tree["outcome"],
            "member": audience_id in profile.get("audiences", []),
            "tree": tree,
        }


PREVIEW_SAMPLE = 10


class IngestionService:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def accept(self, principal: Principal, events: Sequence[UserEventBase]) -> int:
        principal.require_write()
        if events:
            await self._publisher.publish_user_events(events)
        return len(events)


class TenancyService:
    """Projects of an organization and the API keys that reach them."""

    def __init__(self, tenancy: TenancyRepository, keys: KeyRepository) -> None:
        self._tenancy = tenancy
        self._keys = keys

    async def create_project(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require_write()
        if principal.project_id is not None:
            raise Forbidden(
                "organization_key_required", "Only an organization key creates projects"
            )
        project = {
            "_id": new_id("prj"),
            "organization_id": principal.organization_id,
            "name": name,
            "created_at": utcnow(),
        }
        await self._tenancy.insert_project(project)
        return self._project(project)

    async def list_projects(self, principal: Principal) -> list[dict[str, Any]]:
        projects = await self._tenancy.projects(principal.organization_id)
        if principal.project_id is not None:
            projects = [p for p in projects if p["_id"] == principal.project_id]
        return [self._project(p) for p in projects]

    async def create_key(
        self,
        principal: Principal,
        project_id: str | None,
        scope: Scope,
        name: str | None,
        rate_limit: dict[str, Any] | None,
    ) -> dict[str, Any]:
        principal.require_write()
        if project_id is not None:
            project_id = principal.project_for(project_id)
            await self._require_project(principal, project_id)
        elif principal.project_id is not None:
            project_id = principal.project_id
        secret = f"sk_{'live' if scope == 'admin' else 'read'}_{secrets.token_urlsafe(24)}"
        key_hash = hash_key(secret)
        doc = {
            "_id": new_id("key"),
            "hash": key_hash,
            "prefix": secret[:12],
            "name": name,
            "organization_id": principal.organization_id,
            "project_id": project_id,
            "scope": scope,
            "rate_limit": rate_limit,
            "created_at": utcnow(),
            "revoked_at": None,
        }
        await self._keys.upsert(doc)
        return {**self._key(doc), "key": secret}

    async def list_keys(self, principal: Principal) -> list[dict[str, Any]]:
        docs = await self._tenancy.keys(principal.organization_id, principal.project_id)
        return [self._key(doc) for doc in docs]

    async def revoke_key(self, principal: Principal, key_id: str) -> None:
        principal.require_write()
        docs = await self._tenancy.keys(principal.organization_id, principal.project_id)
        if not any(doc["_id"] == key_id for doc in docs):
            raise NotFound("key", key_id)
        await self._tenancy.revoke_key(key_id, utcnow())
        self._keys.forget_cached()

    async def _require_project(self, principal: Principal, project_id: str) -> None:
        project = await self._tenancy.project(project_id)
        if project is None or project["organization_id"] != principal.organization_id:
            raise NotFound("project", project_id)

    @staticmethod
    def _project(doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": doc["_id"],
            "organization_id": doc["organization_id"],
            "name": doc["name"],
            "created_at": doc.get("created_at"),
        }

    @staticmethod
    def _key(doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": doc["_id"],
            "name": doc.get("name"),
            "prefix": doc["prefix"],
            "organization_id": doc["organization_id"],
            "project_id": doc.get("project_id"),
            "scope": doc["scope"],
            "rate_limit": doc.get("rate_limit"),
            "created_at": doc.get("created_at"),
            "revoked_at": doc.get("revoked_at"),
        }
