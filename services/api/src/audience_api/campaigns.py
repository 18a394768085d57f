"""Campaign audiences (seed 004): priority order, first match, entitlements, caps, experiments."""

import asyncio
import copy
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from audience_api import experiments
from audience_api.errors import Conflict, InvalidRequest, NotFound
from audience_api.frequency_caps import FrequencyCap, parse_frequency_cap
from audience_api.services import Principal, new_id
from audience_shared import rules
from audience_shared.profile import coerce_trait_value, resolve_field, to_utc_ms

log = structlog.get_logger()

Document = dict[str, Any]
Clock = Callable[[], datetime]

MAX_AUDIENCES = 100
"""Audiences of one campaign; they live in the campaign's document, read once per resolve."""

ENTITLEMENTS_TRAIT = "entitlements"

# Filter keys a client may echo back from a read (PUT after GET); they are not part of the rule.
_ECHOED_FILTER_KEYS = ("id", "audience_id")

_EDIT_ATTEMPTS = 5


class CampaignStore(Protocol):
    """Where campaigns, their counters and experiment records live."""

    async def insert_campaign(self, campaign: Document) -> None: ...

    async def campaign(self, project_id: str, campaign_id: str) -> Document | None: ...

    async def campaigns(self, project_id: str) -> list[Document]: ...

    async def replace_campaign(self, campaign: Document, expected_version: int) -> bool: ...

    async def delete_campaign(self, project_id: str, campaign_id: str) -> bool: ...

    async def save_experiment_refs(self, refs: Sequence[Document]) -> None: ...

    async def delete_experiment_refs(self, ref_ids: Sequence[str]) -> None: ...

    async def experiment_ref(self, project_id: str, experiment_id: str) -> Document | None: ...

    async def profile(
        self, project_id: str, user_id: str, fields: Sequence[str]
    ) -> Document | None: ...

    async def impression_counts(self, counter_ids: Sequence[str]) -> dict[str, int]: ...

    async def count_impression(self, counter_id: str, fields: Document, at: datetime) -> None: ...

    async def stored_resolution(self, resolution_id: str) -> Document | None: ...

    async def save_resolution(self, resolution: Document) -> bool: ...

    async def record_exposure(self, exposure: Document) -> None: ...

    async def exposures(self, project_id: str, experiment_id: str) -> list[Document]: ...

    async def last_event_times(
        self, project_id: str, user_ids: Sequence[str], event: str
    ) -> dict[str, datetime]: ...


class ProjectDirectory(Protocol):
    async def project(self, project_id: str) -> Document | None: ...


def counter_id(project_id: str, audience_id: str, user_id: str, period_key: str) -> str:
    return f"{project_id}|{audience_id}|{user_id}|{period_key}"


def exposure_id(project_id: str, experiment_id: str, user_id: str) -> str:
    return f"{project_id}|{experiment_id}|{user_id}"


def experiment_ref_id(project_id: str, experiment_id: str) -> str:
    return f"{project_id}|{experiment_id}"


def compile_filters(filters: Sequence[Mapping[str, Any]]) -> rules.Group:
    """Seed 004 filters through the rule language (RuleError on anything it refuses)."""
    return rules.rule_from_filters(
        [
            {k: v for k, v in item.items() if k not in _ECHOED_FILTER_KEYS}
            if isinstance(item, Mapping)
            else item
            for item in filters
        ]
    )


def stored_filters(filters: Sequence[Mapping[str, Any]]) -> list[Document]:
    """Validated filters as stored: each with its own id and an explicit conjunction."""
    compile_filters(filters)
    return [
        {
            "id": new_id("flt"),
            "field": item["field"],
            "operator": item["operator"],
            "value": item.get("value"),
            "conjunction": str(item.get("conjunction", "and")).lower(),
        }
        for item in filters
    ]


def holds_entitlement(traits: Mapping[str, Any], entitlement: str) -> bool:
    held = traits.get(ENTITLEMENTS_TRAIT)
    if isinstance(held, list):
        return entitlement in held
    return held == entitlement


# What a resolve reads of every profile: traits (entitlements and rule fields) and the derived
# fields a filter can name; event slots are added per campaign, never their `recent` lists.
BASE_PROFILE_FIELDS = ("traits", "event_count", "first_seen", "last_seen")


@dataclass(frozen=True, slots=True)
class CompiledCampaign:
    rules: list[rules.CompiledRule]
    profile_fields: tuple[str, ...]


def compile_campaign(campaign: Document) -> CompiledCampaign:
    compiled: list[rules.CompiledRule] = []
    fields = dict.fromkeys(BASE_PROFILE_FIELDS)
    for audience in campaign["audiences"]:
        rule = compile_filters(audience["filters"])
        compiled.append(rules.compile_predicate(rule))
        for item in audience["filters"]:
            ref = resolve_field(item["field"])
            if ref.event is not None:
                fields[ref.mongo_path] = None
    return CompiledCampaign(compiled, tuple(fields))


class CompiledCampaigns:
    """Compiled audience rules per campaign version: compiling once keeps resolve cheap."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._cache: OrderedDict[tuple[str, int], CompiledCampaign] = OrderedDict()

    def of(self, campaign: Document) -> CompiledCampaign:
        key = (campaign["_id"], campaign["version"])
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = compile_campaign(campaign)
            self._cache[key] = compiled
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return compiled


class CampaignService:
    def __init__(
        self,
        store: CampaignStore,
        projects: ProjectDirectory,
        clock: Clock,
        conversion_event: str,
        auto_promote_check_s: float = 30.0,
    ) -> None:
        self._store = store
        self._projects = projects
        self._clock = clock
        self._conversion_event = conversion_event
        self._auto_promote_check_s = auto_promote_check_s
        self._compiled = CompiledCampaigns()
        # Exposures already written by this process: a repeat resolve skips the no-op upsert.
        self._recorded: OrderedDict[str, None] = OrderedDict()
        self._last_check: dict[str, float] = {}
        self._checks: set[asyncio.Task[None]] = set()

    def now(self) -> datetime:
        return to_utc_ms(self._clock())

    # -- campaigns ------------------------------------------------------------------------------

    async def create_campaign(
        self, principal: Principal, project_id: str, payload: Mapping[str, Any]
    ) -> Document:
        principal.require_write()
        project_id = await self._project(principal, project_id)
        now = self.now()
        campaign: Document = {
            "_id": new_id("cmp"),
            "project_id": project_id,
            "name": payload["name"],
            "status": payload.get("status") or "active",
            "audiences": [],
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        await self._store.insert_campaign(campaign)
        return campaign_resource(campaign)

    async def list_campaigns(self, principal: Principal, project_id: str) -> list[Document]:
        project_id = await self._project(principal, project_id)
        return [campaign_resource(doc) for doc in await self._store.campaigns(project_id)]

    async def get_campaign(
        self, principal: Principal, project_id: str, campaign_id: str
    ) -> Document:
        return campaign_resource(await self._campaign(principal, project_id, campaign_id))

    async def update_campaign(
        self, principal: Principal, project_id: str, campaign_id: str, changes: Mapping[str, Any]
    ) -> Document:
        principal.require_write()

        def edit(campaign: Document) -> None:
            for field in ("name", "status"):
                if changes.get(field) is not None:
                    campaign[field] = changes[field]

        return campaign_resource(await self._edit(principal, project_id, campaign_id, edit))

    async def delete_campaign(
        self, principal: Principal, project_id: str, campaign_id: str
    ) -> None:
        principal.require_write()
        campaign = await self._campaign(principal, project_id, campaign_id)
        await self._store.delete_campaign(campaign["project_id"], campaign_id)
        await self._store.delete_experiment_refs(
            [
                experiment_ref_id(campaign["project_id"], audience["experiment"]["id"])
                for audience in campaign["audiences"]
                if audience.get("experiment")
            ]
        )

    # -- audiences ------------------------------------------------------------------------------

    async def create_audience(
        self, principal: Principal, project_id: str, campaign_id: str, payload: Mapping[str, Any]
    ) -> Document:
        principal.require_write()
        filters = stored_filters(payload["filters"])
        now = self.now()
        audience_id = new_id("aud")
        experiment = None
        if payload.get("experiment") is not None:
            experiment = self._new_experiment(payload["experiment"], now)
        audience: Document = {
            "id": audience_id,
            "name": payload["name"],
            "priority_order": 0,
            "filters": filters,
            "entitlement_check": payload.get("entitlement_check"),
            "frequency_cap": payload.get("frequency_cap"),
            "paywall_id": payload.get("paywall_id"),
            "experiment": experiment,
            "created_at": now,
            "updated_at": now,
        }

        def edit(campaign: Document) -> None:
            if len(campaign["audiences"]) >= MAX_AUDIENCES:
                raise InvalidRequest(
                    "too_many_audiences",
                    f"A campaign has at most {MAX_AUDIENCES} audiences",
                    {"limit": MAX_AUDIENCES},
                )
            audience["priority_order"] = len(campaign["audiences"])
            campaign["audiences"].append(audience)

        campaign = await self._edit(principal, project_id, campaign_id, edit)
        if experiment is not None:
            await self._store.save_experiment_refs(
                [
                    {
                        "_id": experiment_ref_id(campaign["project_id"], experiment["id"]),
                        "project_id": campaign["project_id"],
                        "campaign_id": campaign_id,
                        "audience_id": audience_id,
                    }
                ]
            )
        return audience_resource(campaign, audience)

    async def list_audiences(
        self, principal: Principal, project_id: str, campaign_id: str
    ) -> list[Document]:
        campaign = await self._campaign(principal, project_id, campaign_id)
        return [audience_resource(campaign, a) for a in campaign["audiences"]]

    async def get_audience(
        self, principal: Principal, project_id: str, campaign_id: str, audience_id: str
    ) -> Document:
        campaign = await self._campaign(principal, project_id, campaign_id)
        return audience_resource(campaign, _audience_in(campaign, audience_id))

    async def update_audience(
        self,
        principal: Principal,
        project_id: str,
        campaign_id: str,
        audience_id: str,
        changes: Mapping[str, Any],
    ) -> Document:
        principal.require_write()
        filters = stored_filters(changes["filters"]) if changes.get("filters") is not None else None
        now = self.now()

        def edit(campaign: Document) -> None:
            audience = _audience_in(campaign, audience_id)
            if changes.get("name") is not None:
                audience["name"] = changes["name"]
            if filters is not None:
                audience["filters"] = filters
            # These three may be cleared with an explicit null.
            for field in ("entitlement_check", "frequency_cap", "paywall_id"):
                if field in changes:
                    audience[field] = changes[field]
            audience["updated_at"] = now

        campaign = await self._edit(principal, project_id, campaign_id, edit)
        return audience_resource(campaign, _audience_in(campaign, audience_id))

    async def delete_audience(
        self, principal: Principal, project_id: str, campaign_id: str, audience_id: str
    ) -> None:
        principal.require_write()
        removed: list[Document] = []

        def edit(campaign: Document) -> None:
            removed.clear()
            removed.append(_audience_in(campaign, audience_id))
            campaign["audiences"] = [a for a in campaign["audiences"] if a["id"] != audience_id]
            # Dense numbering, so the next created audience takes the next free order.
            for order, audience in enumerate(campaign["audiences"]):
                audience["priority_order"] = order

        campaign = await self._edit(principal, project_id, campaign_id, edit)
        experiment = removed[0].get("experiment")
        if experiment:
            await self._store.delete_experiment_refs(
                [experiment_ref_id(campaign["project_id"], experiment["id"])]
            )

    async def reorder_audiences(
        self, principal: Principal, project_id: str, campaign_id: str, order: Sequence[str]
    ) -> list[Document]:
        principal.require_write()

        def edit(campaign: Document) -> None:
            current = {a["id"]: a for a in campaign["audiences"]}
            duplicates = sorted(i for i, n in Counter(order).items() if n > 1)
            unknown = sorted(set(order) - set(current))
            missing = sorted(set(current) - set(order))
            if duplicates or unknown or missing:
                raise InvalidRequest(
                    "invalid_order",
                    "order must list every audience of the campaign exactly once",
                    {"duplicates": duplicates, "unknown": unknown, "missing": missing},
                )
            campaign["audiences"] = [current[i] for i in order]
            for position, audience in enumerate(campaign["audiences"]):
                audience["priority_order"] = position

        campaign = await self._edit(principal, project_id, campaign_id, edit)
        return [audience_resource(campaign, a) for a in campaign["audiences"]]

    # -- resolution -----------------------------------------------------------------------------

    async def resolve(
        self, principal: Principal, project_id: str, campaign_id: str, request: Mapping[str, Any]
    ) -> Document:
        """The first audience in priority order that matches, and what it shows the user."""
        campaign = await self._campaign(principal, project_id, campaign_id)
        project_id = campaign["project_id"]
        user_id: str = request["user_id"]
        if campaign["status"] != "active":
            return _resolution(None, reason="campaign_paused")
        now = self.now()
        session_id: str | None = request.get("session_id")
        request_id: str | None = request.get("request_id")
        caps: dict[str, tuple[FrequencyCap, str]] = {}
        for audience in campaign["audiences"]:
            if audience.get("frequency_cap"):
                cap = parse_frequency_cap(audience["frequency_cap"])
                key = counter_id(
                    project_id, audience["id"], user_id, cap.period_key(now, session_id)
                )
                caps[audience["id"]] = (cap, key)
        resolution_id = f"{project_id}|{campaign_id}|{request_id}" if request_id else None
        compiled = self._compiled.of(campaign)
        # One round trip each, concurrently: the profile by _id, every cap counter by _id.
        profile, counts, stored = await asyncio.gather(
            self._store.profile(project_id, user_id, compiled.profile_fields),
            self._store.impression_counts([key for _, key in caps.values()]),
            self._stored(resolution_id),
        )
        if stored is not None:
            return self._replayed(stored, user_id)

        traits = {**(profile or {}).get("traits", {})}
        traits.update(coerce_trait_value(dict(request.get("attributes") or {})))
        view = {**(profile or {}), "traits": traits}
        skipped: list[Document] = []
        result = _resolution(None, reason="no_match")
        chosen: Document | None = None
        for audience, rule in zip(campaign["audiences"], compiled.rules, strict=True):
            if not rule.matches(view, now):
                continue
            entitlement = audience.get("entitlement_check")
            if entitlement and holds_entitlement(traits, entitlement):
                skipped.append({"audience_id": audience["id"], "reason": "entitled"})
                continue
            capped = caps.get(audience["id"])
            if capped is not None and counts.get(capped[1], 0) >= capped[0].limit:
                skipped.append({"audience_id": audience["id"], "reason": "frequency_capped"})
                continue
            chosen = audience
            result = self._decide(project_id, audience, user_id)
            break
        result["skipped"] = skipped

        if resolution_id is not None:
            saved = await self._store.save_resolution(
                {
                    "_id": resolution_id,
                    "project_id": project_id,
                    "campaign_id": campaign_id,
                    "user_id": user_id,
                    "response": result,
                    "created_at": now,
                }
            )
            if not saved:  # the same request_id raced us: its answer stands, counted once
                stored = await self._store.stored_resolution(resolution_id)
                if stored is not None:
                    return self._replayed(stored, user_id)
        if chosen is not None:
            await self._record(project_id, campaign_id, chosen, user_id, result, caps, now)
        return result

    def _decide(self, project_id: str, audience: Document, user_id: str) -> Document:
        experiment = audience.get("experiment")
        if not experiment:
            return _resolution(audience, paywall_id=audience.get("paywall_id"), reason="matched")
        variants = experiment["variants"]
        promotion = experiment.get("promotion")
        if promotion is not None:
            winner = next(v for v in variants if v["id"] == promotion["variant_id"])
            return _resolution(audience, experiment, winner, reason="experiment_promoted")
        if experiment["status"] == "paused":
            # Paused: everyone sees the control and nothing is recorded; resume picks up the
            # same assignments, which only depend on experiment and user.
            return _resolution(audience, experiment, variants[0], reason="experiment_paused")
        variant_id = experiments.assign(
            experiment["id"], user_id, [(v["id"], v["traffic_percentage"]) for v in variants]
        )
        if variant_id is None:
            return _resolution(audience, experiment, None, reason="holdout")
        variant = next(v for v in variants if v["id"] == variant_id)
        return _resolution(audience, experiment, variant, reason="experiment_variant")

    async def _record(
        self,
        project_id: str,
        campaign_id: str,
        audience: Document,
        user_id: str,
        result: Document,
        caps: Mapping[str, tuple[FrequencyCap, str]],
        now: datetime,
    ) -> None:
        """Impressions (a paywall was shown) and exposures (a running experiment assigned)."""
        capped = caps.get(audience["id"])
        if result["paywall_id"] is not None and capped is not None:
            await self._store.count_impression(
                capped[1],
                {"project_id": project_id, "audience_id": audience["id"], "user_id": user_id},
                now,
            )
        experiment = audience.get("experiment")
        if result["reason"] not in ("experiment_variant", "holdout") or not experiment:
            return
        exposure = exposure_id(project_id, experiment["id"], user_id)
        if exposure not in self._recorded:
            await self._store.record_exposure(
                {
                    "_id": exposure,
                    "project_id": project_id,
                    "campaign_id": campaign_id,
                    "experiment_id": experiment["id"],
                    "user_id": user_id,
                    "variant_id": result["variant_id"],
                    "first_exposed_at": now,
                }
            )
            self._recorded[exposure] = None
            if len(self._recorded) > 100_000:
                self._recorded.popitem(last=False)
        if experiment.get("auto_promote"):
            self._schedule_auto_promote_check(project_id, experiment["id"])

    async def _stored(self, resolution_id: str | None) -> Document | None:
        if resolution_id is None:
            return None
        return await self._store.stored_resolution(resolution_id)

    @staticmethod
    def _replayed(stored: Document, user_id: str) -> Document:
        if stored["user_id"] != user_id:
            raise Conflict(
                "request_id_reused",
                "This request_id was already used for another user",
                {"request_id": stored["_id"].rsplit("|", 1)[-1]},
            )
        return dict(stored["response"])

    # -- experiments ----------------------------------------------------------------------------

    def _new_experiment(self, payload: Mapping[str, Any], now: datetime) -> Document:
        variants = [
            {
                "id": new_id("var"),
                "paywall_id": v["paywall_id"],
                "traffic_percentage": v["traffic_percentage"],
            }
            for v in payload["variants"]
        ]
        total = sum(v["traffic_percentage"] for v in variants)
        return {
            "id": new_id("exp"),
            "status": "running",
            "variants": variants,
            "holdout_percentage": round(100 - total, 2),
            "confidence_threshold": payload.get("confidence_threshold", 0.95),
            "auto_promote": payload.get("auto_promote", False),
            "min_exposures": payload.get("min_exposures", 100),
            "conversion_event": payload.get("conversion_event") or self._conversion_event,
            "promotion": None,
            "created_at": now,
            "updated_at": now,
        }

    async def get_experiment(
        self, principal: Principal, project_id: str, experiment_id: str
    ) -> Document:
        campaign, audience = await self._experiment(principal, project_id, experiment_id)
        return experiment_body(campaign, audience)

    async def set_experiment_status(
        self, principal: Principal, project_id: str, experiment_id: str, status: str
    ) -> Document:
        principal.require_write()
        campaign, audience = await self._experiment(principal, project_id, experiment_id)

        def edit(doc: Document) -> None:
            experiment = _audience_in(doc, audience["id"])["experiment"]
            if experiment["promotion"] is not None:
                raise Conflict(
                    "experiment_promoted",
                    "The experiment has a promoted winner; it can no longer be paused or resumed",
                    {"experiment_id": experiment_id},
                )
            experiment["status"] = status
            experiment["updated_at"] = self.now()

        doc = await self._edit(principal, campaign["project_id"], campaign["_id"], edit)
        return experiment_body(doc, _audience_in(doc, audience["id"]))

    async def promote(
        self, principal: Principal, project_id: str, experiment_id: str, variant_id: str
    ) -> Document:
        principal.require_write()
        campaign, audience = await self._experiment(principal, project_id, experiment_id)
        if not any(v["id"] == variant_id for v in audience["experiment"]["variants"]):
            raise NotFound("variant", variant_id)
        promotion = {
            "variant_id": variant_id,
            "at": self.now(),
            "by": "manual",
            "reason": "promoted through the API",
        }
        doc = await self._promote(campaign, audience["id"], promotion)
        return experiment_body(doc, _audience_in(doc, audience["id"]))

    async def results(self, principal: Principal, project_id: str, experiment_id: str) -> Document:
        """Exposures, conversions and each variant's probability of beating the control.

        A user converted when the conversion event's last occurrence in their profile (kept by
        the evaluator) is after their first exposure. With auto_promote, a variant that beats
        the control at the confidence threshold is promoted here.
        """
        campaign, audience = await self._experiment(principal, project_id, experiment_id)
        report = await self._compute_results(campaign, audience)
        if report["winner"] is not None and _can_auto_promote(audience["experiment"]):
            try:
                campaign = await self._promote(campaign, audience["id"], report["winner"])
            except Conflict:  # the background check promoted it a moment ago
                campaign, _ = await self._experiment(principal, project_id, experiment_id)
            audience = _audience_in(campaign, audience["id"])
        experiment = audience["experiment"]
        return {
            "experiment_id": experiment["id"],
            "campaign_id": campaign["_id"],
            "audience_id": audience["id"],
            "status": _experiment_status(experiment),
            "conversion_event": experiment["conversion_event"],
            "method": experiments.METHOD,
            "method_description": experiments.METHOD_DESCRIPTION,
            "control_variant_id": experiment["variants"][0]["id"],
            "confidence_threshold": experiment["confidence_threshold"],
            "auto_promote": experiment["auto_promote"],
            "min_exposures": experiment["min_exposures"],
            "variants": report["variants"],
            "holdout": report["holdout"],
            "promotion": experiment["promotion"],
            "computed_at": report["computed_at"],
        }

    async def _compute_results(self, campaign: Document, audience: Document) -> Document:
        experiment = audience["experiment"]
        now = self.now()
        exposures = await self._store.exposures(campaign["project_id"], experiment["id"])
        converted_at = await self._store.last_event_times(
            campaign["project_id"],
            [e["user_id"] for e in exposures],
            experiment["conversion_event"],
        )
        return experiments.summarize(experiment, exposures, converted_at, now)

    async def _promote(self, campaign: Document, audience_id: str, promotion: Document) -> Document:
        def edit(doc: Document) -> None:
            experiment = _audience_in(doc, audience_id)["experiment"]
            if experiment["promotion"] is not None:
                raise Conflict(
                    "experiment_promoted",
                    "The experiment already has a promoted winner",
                    {"promotion": experiment["promotion"]},
                )
            experiment["promotion"] = promotion
            experiment["status"] = "promoted"
            experiment["updated_at"] = promotion["at"]

        doc = await self._edit_doc(campaign["project_id"], campaign["_id"], edit)
        log.info(
            "experiment.promoted",
            campaign_id=campaign["_id"],
            audience_id=audience_id,
            variant_id=promotion["variant_id"],
            by=promotion["by"],
        )
        return doc

    def _schedule_auto_promote_check(self, project_id: str, experiment_id: str) -> None:
        """Check auto-promotion in the background now and then, so it happens even when nobody
        reads the results; the results endpoint checks every time."""
        key = experiment_ref_id(project_id, experiment_id)
        tick = time.monotonic()
        if tick - self._last_check.get(key, float("-inf")) < self._auto_promote_check_s:
            return
        self._last_check[key] = tick
        task = asyncio.create_task(self._auto_promote_check(project_id, experiment_id))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _auto_promote_check(self, project_id: str, experiment_id: str) -> None:
        try:
            ref = await self._store.experiment_ref(project_id, experiment_id)
            campaign = (
                None if ref is None else await self._store.campaign(project_id, ref["campaign_id"])
            )
            if ref is None or campaign is None:
                return
            audience = _audience_in(campaign, ref["audience_id"])
            if not _can_auto_promote(audience["experiment"]):
                return
            report = await self._compute_results(campaign, audience)
            if report["winner"] is not None:
                await self._promote(campaign, audience["id"], report["winner"])
        except (Conflict, NotFound):
            return  # promoted or deleted meanwhile
        except Exception:
            # A background task has no caller to report to; log it with the traceback.
            log.exception("experiment.auto_promote_check_failed", experiment_id=experiment_id)

    # -- plumbing -------------------------------------------------------------------------------

    async def _project(self, principal: Principal, project_id: str) -> str:
        project_id = principal.project_for(project_id)
        if principal.project_id is None:
            project = await self._projects.project(project_id)
            if project is None or project.get("organization_id") != principal.organization_id:
                raise NotFound("project", project_id)
        return project_id

    async def _campaign(self, principal: Principal, project_id: str, campaign_id: str) -> Document:
        project_id = await self._project(principal, project_id)
        campaign = await self._store.campaign(project_id, campaign_id)
        if campaign is None:
            raise NotFound("campaign", campaign_id)
        return campaign

    async def _experiment(
        self, principal: Principal, project_id: str, experiment_id: str
    ) -> tuple[Document, Document]:
        project_id = await self._project(principal, project_id)
        ref = await self._store.experiment_ref(project_id, experiment_id)
        campaign = (
            None if ref is None else await self._store.campaign(project_id, ref["campaign_id"])
        )
        if ref is None or campaign is None:
            raise NotFound("experiment", experiment_id)
        for audience in campaign["audiences"]:
            if audience["id"] == ref["audience_id"] and audience.get("experiment"):
                return campaign, audience
        raise NotFound("experiment", experiment_id)

    async def _edit(
        self,
        principal: Principal,
        project_id: str,
        campaign_id: str,
        edit: Callable[[Document], None],
    ) -> Document:
        project_id = await self._project(principal, project_id)
        return await self._edit_doc(project_id, campaign_id, edit)

    async def _edit_doc(
        self, project_id: str, campaign_id: str, edit: Callable[[Document], None]
    ) -> Document:
        """Read, change, write back guarded by version: concurrent edits never interleave."""
        for _ in range(_EDIT_ATTEMPTS):
            current = await self._store.campaign(project_id, campaign_id)
            if current is None:
                raise NotFound("campaign", campaign_id)
            changed = copy.deepcopy(current)
            edit(changed)
            changed["version"] = current["version"] + 1
            changed["updated_at"] = self.now()
            if await self._store.replace_campaign(changed, current["version"]):
                return changed
        raise Conflict(
            "concurrent_edit", "The campaign changed concurrently; retry", {"id": campaign_id}
        )


def _can_auto_promote(experiment: Document) -> bool:
    return bool(
        experiment["auto_promote"]
        and experiment["status"] == "running"
        and experiment["promotion"] is None
    )


def _experiment_status(experiment: Document) -> str:
    return "promoted" if experiment["promotion"] is not None else str(experiment["status"])


def _audience_in(campaign: Document, audience_id: str) -> Document:
    for audience in campaign["audiences"]:
        if audience["id"] == audience_id:
            return audience  # type: ignore[no-any-return]
    raise NotFound("audience", audience_id)


def _resolution(
    audience: Document | None,
    experiment: Document | None = None,
    variant: Document | None = None,
    *,
    paywall_id: str | None = None,
    reason: str,
) -> Document:
    return {
        "audience_id": None if audience is None else audience["id"],
        "experiment_id": None if experiment is None else experiment["id"],
        "variant_id": None if variant is None else variant["id"],
        "paywall_id": variant["paywall_id"] if variant is not None else paywall_id,
        "holdout": reason == "holdout",
        "reason": reason,
        "skipped": [],
    }


def campaign_resource(campaign: Document) -> Document:
    return {
        "id": campaign["_id"],
        "project_id": campaign["project_id"],
        "name": campaign["name"],
        "status": campaign["status"],
        "audience_count": len(campaign["audiences"]),
        "created_at": campaign["created_at"],
        "updated_at": campaign["updated_at"],
    }


def audience_resource(campaign: Document, audience: Document) -> Document:
    return {
        "id": audience["id"],
        "campaign_id": campaign["_id"],
        "name": audience["name"],
        "priority_order": audience["priority_order"],
        "entitlement_check": audience.get("entitlement_check"),
        "frequency_cap": audience.get("frequency_cap"),
        "paywall_id": audience.get("paywall_id"),
        "filters": [{**f, "audience_id": audience["id"]} for f in audience["filters"]],
        "experiment": experiment_body(campaign, audience) if audience.get("experiment") else None,
        "created_at": audience["created_at"],
        "updated_at": audience["updated_at"],
    }


def experiment_body(campaign: Document, audience: Document) -> Document:
    experiment = audience["experiment"]
    return {
        "id": experiment["id"],
        "campaign_id": campaign["_id"],
        "audience_id": audience["id"],
        "status": _experiment_status(experiment),
        "holdout_percentage": experiment["holdout_percentage"],
        "confidence_threshold": experiment["confidence_threshold"],
        "auto_promote": experiment["auto_promote"],
        "min_exposures": experiment["min_exposures"],
        "conversion_event": experiment["conversion_event"],
        "variants": [dict(v) for v in experiment["variants"]],
        "promotion": experiment["promotion"],
        "created_at": experiment["created_at"],
        "updated_at": experiment["updated_at"],
    }
