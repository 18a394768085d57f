"""Campaigns, their audiences in priority order, resolution for a user, and experiments."""

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import ConfigDict, Field, field_validator, model_validator

from audience_api.frequency_caps import parse_frequency_cap
from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import campaigns as ex
from audience_api.routes.examples import json_example, no_content
from audience_api.schemas import Strict

router = APIRouter(prefix="/v1/projects/{project_id}", tags=["campaigns"])

Name = Field(min_length=1, max_length=200)
Ident = Field(min_length=1, max_length=200)


class CampaignCreate(Strict):
    name: str = Name
    status: Literal["active", "paused"] = "active"

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Summer paywall"}]}
    )


class CampaignUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    status: Literal["active", "paused"] | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "paused"}]}
    )


class VariantCreate(Strict):
    paywall_id: str = Ident
    traffic_percentage: float = Field(ge=0, le=100)


class ExperimentCreate(Strict):
    variants: list[VariantCreate] = Field(min_length=1, max_length=20)
    confidence_threshold: float = Field(default=0.95, ge=0, le=1)
    auto_promote: bool = False
    min_exposures: int = Field(
        default=100, ge=1, le=10_000_000, description="Per group, before auto-promotion"
    )
    conversion_event: str | None = Field(
        default=None, min_length=1, max_length=200, description="Default: the gateway's setting"
    )

    @model_validator(mode="after")
    def traffic_fits(self) -> "ExperimentCreate":
        total = sum(v.traffic_percentage for v in self.variants)
        if total > 100 + 1e-9:
            raise ValueError(f"variant traffic adds up to {total:g}%, more than 100%")
        return self


def _check_cap(value: str | None) -> str | None:
    return None if value is None else str(parse_frequency_cap(value))


class AudienceCreate(Strict):
    name: str = Name
    filters: list[Any] = Field(max_length=200)
    entitlement_check: str | None = Field(default=None, min_length=1, max_length=200)
    frequency_cap: str | None = Field(default=None, max_length=40, examples=["3/day"])
    paywall_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Shown when no experiment"
    )
    experiment: ExperimentCreate | None = None

    _cap = field_validator("frequency_cap")(_check_cap)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "US and Canada",
                    "filters": [{"field": "country", "operator": "in", "value": ["US", "CA"]}],
                    "entitlement_check": "premium",
                    "frequency_cap": "3/day",
                    "paywall_id": "paywall_classic",
                    "experiment": {
                        "variants": [
                            {"paywall_id": "paywall_classic", "traffic_percentage": 45},
                            {"paywall_id": "paywall_trial_7d", "traffic_percentage": 45},
                        ],
                        "conversion_event": "purchase",
                    },
                }
            ]
        },
    )


class AudienceUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    filters: list[Any] | None = Field(default=None, max_length=200)
    entitlement_check: str | None = Field(default=None, min_length=1, max_length=200)
    frequency_cap: str | None = Field(default=None, max_length=40)
    paywall_id: str | None = Field(default=None, min_length=1, max_length=200)

    _cap = field_validator("frequency_cap")(_check_cap)

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"frequency_cap": "1/day"}]}
    )


class Reorder(Strict):
    order: list[str] = Field(max_length=1000)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"order": ["aud_8a9b0c1d2e3f4a5b", "aud_3b4c5d6e7f8a9b0c"]}]
        },
    )


class ResolveRequest(Strict):
    user_id: str = Ident
    attributes: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = Field(default=None, min_length=1, max_length=200)
    request_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Retries count one impression"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u_1042",
                    "attributes": {"country": "US"},
                    "session_id": "sess_51c0",
                    "request_id": "req_9f3e27",
                }
            ]
        },
    )


class Promote(Strict):
    variant_id: str = Ident

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"variant_id": "var_6e7f8a9b0c1d2e3f"}]}
    )


@router.post("/campaigns", status_code=201, responses=json_example(ex.CAMPAIGN, 201))
async def create_campaign(
    project_id: str, body: CampaignCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.campaigns.create_campaign(caller, project_id, body.model_dump())


@router.get("/campaigns", responses=json_example(ex.CAMPAIGNS))
async def list_campaigns(
    project_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return {"items": await services.campaigns.list_campaigns(caller, project_id)}


@router.get("/campaigns/{campaign_id}", responses=json_example(ex.CAMPAIGN))
async def get_campaign(
    project_id: str, campaign_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.campaigns.get_campaign(caller, project_id, campaign_id)


@router.put("/campaigns/{campaign_id}", responses=json_example(ex.UPDATED_CAMPAIGN))
async def update_campaign(
    project_id: str,
    campaign_id: str,
    body: CampaignUpdate,
    caller: PrincipalDep,
    services: ContainerDep,
) -> dict[str, Any]:
    return await services.campaigns.update_campaign(
        caller, project_id, campaign_id, body.model_dump(exclude_none=True)
    )


@router.delete(
    "/campaigns/{campaign_id}",
    status_code=204,
    responses=no_content("Deleted with its audiences and experiments"),
)
async def delete_campaign(
    project_id: str, campaign_id: str, caller: PrincipalDep, services: ContainerDep
) -> Response:
    await services.campaigns.delete_campaign(caller, project_id, campaign_id)
    return Response(status_code=204)


@router.post(
    "/campaigns/{campaign_id}/audiences",
    status_code=201,
    responses=json_example(ex.AUDIENCE, 201),
)
async def create_audience(
    project_id: str,
    campaign_id: str,
    body: AudienceCreate,
    caller: PrincipalDep,
    services: ContainerDep,
) -> dict[str, Any]:
    return await services.campaigns.create_audience(
        caller, project_id, campaign_id, body.model_dump()
    )


@router.get("/campaigns/{campaign_id}/audiences", responses=json_example(ex.AUDIENCES))
async def list_audiences(
    project_id: str, campaign_id: str, caller: PrincipalDep, services: ContainerDep
) -> list[dict[str, Any]]:
    return await services.campaigns.list_audiences(caller, project_id, campaign_id)


# Declared before `/audiences/{audience_id}` so "reorder" is never taken for an audience id.
@router.put("/campaigns/{campaign_id}/audiences/reorder", responses=json_example(ex.REORDERED))
async def reorder_audiences(
    project_id: str,
    campaign_id: str,
    body: Reorder,
    caller: PrincipalDep,
    services: ContainerDep,
) -> list[dict[str, Any]]:
    return await services.campaigns.reorder_audiences(caller, project_id, campaign_id, body.order)


@router.get("/campaigns/{campaign_id}/audiences/{audience_id}", responses=json_example(ex.AUDIENCE))
async def get_audience(
    project_id: str,
    campaign_id: str,
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
) -> dict[str, Any]:
    return await services.campaigns.get_audience(caller, project_id, campaign_id, audience_id)


@router.put(
    "/campaigns/{campaign_id}/audiences/{audience_id}",
    responses=json_example(ex.UPDATED_AUDIENCE),
)
async def update_audience(
    project_id: str,
    campaign_id: str,
    audience_id: str,
    body: AudienceUpdate,
    caller: PrincipalDep,
    services: ContainerDep,
) -> dict[str, Any]:
    # exclude_unset: an explicit null clears entitlement_check, frequency_cap or paywall_id.
    return await services.campaigns.update_audience(
        caller, project_id, campaign_id, audience_id, body.model_dump(exclude_unset=True)
    )


@router.delete(
    "/campaigns/{campaign_id}/audiences/{audience_id}",
    status_code=204,
    responses=no_content("Deleted; the audiences after it move up one place"),
)
async def delete_audience(
    project_id: str,
    campaign_id: str,
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
) -> Response:
    await services.campaigns.delete_audience(caller, project_id, campaign_id, audience_id)
    return Response(status_code=204)


@router.post("/campaigns/{campaign_id}/resolve", responses=json_example(ex.RESOLUTION))
async def resolve(
    project_id: str,
    campaign_id: str,
    body: ResolveRequest,
    caller: PrincipalDep,
    services: ContainerDep,
) -> dict[str, Any]:
    return await services.campaigns.resolve(caller, project_id, campaign_id, body.model_dump())


@router.get("/experiments/{experiment_id}", responses=json_example(ex.EXPERIMENT))
async def get_experiment(
    project_id: str, experiment_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.campaigns.get_experiment(caller, project_id, experiment_id)


@router.get("/experiments/{experiment_id}/results", responses=json_example(ex.RESULTS))
async def experiment_results(
    project_id: str, experiment_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.campaigns.results(caller, project_id, experiment_id)


@router.post("/experiments/{experiment_id}/pause", responses=json_example(ex.PAUSED_EXPERIMENT))
async def pause_experiment(
    project_id: str, experiment_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.campaigns.set_experiment_status(
        caller, project_id, experiment_id, "paused"
    )


@router.post("/experiments/{experiment_id}/resume", responses=json_example(ex.EXPERIMENT))
async def resume_experiment(
    project_id: str, experiment_id: str, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.campaigns.set_experiment_status(
        caller, project_id, experiment_id, "running"
    )


@router.post("/experiments/{experiment_id}/promote", responses=json_example(ex.PROMOTED_EXPERIMENT))
async def promote_variant(
    project_id: str,
    experiment_id: str,
    body: Promote,
    caller: PrincipalDep,
    services: ContainerDep,
) -> dict[str, Any]:
    return await services.campaigns.promote(caller, project_id, experiment_id, body.variant_id)
