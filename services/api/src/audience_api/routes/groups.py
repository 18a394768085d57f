"""Seed 002 audience groups and loyalty tiers, and seed 003 segments."""

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import Field

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import groups as ex
from audience_api.routes.examples import json_example, no_content
from audience_api.schemas import Strict

router = APIRouter(prefix="/v1/audiences", tags=["groups and segments"])

METRIC_PATTERN = r"^(total_order_value|total_orders|metadata\.[A-Za-z0-9_]{1,100})$"


class Tier(Strict):
    name: str = Field(min_length=1, max_length=200)
    min: float = Field(ge=-1e15, le=1e15, description="Inclusive lower bound")
    max: float | None = Field(
        default=None, ge=-1e15, le=1e15, description="Exclusive upper bound; none = unbounded"
    )


class LoyaltyTiersCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    project_id: str | None = None
    metric: str = Field(pattern=METRIC_PATTERN, examples=["total_order_value"])
    tiers: list[Tier] = Field(min_length=1, max_length=50)

    model_config = Strict.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "name": "Loyalty",
                    "metric": "total_order_value",
                    "tiers": [
                        {"name": "Bronze", "min": 0, "max": 100},
                        {"name": "Silver", "min": 100, "max": 500},
                        {"name": "Gold", "min": 500},
                    ],
                }
            ]
        }
    }


class LoyaltyTiersUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    project_id: str | None = None
    metric: str | None = Field(default=None, pattern=METRIC_PATTERN)
    tiers: list[Tier] = Field(min_length=1, max_length=50)

    model_config = Strict.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "tiers": [
                        {"name": "Bronze", "min": 0, "max": 100},
                        {"name": "Silver", "min": 100, "max": 1000},
                        {"name": "Gold", "min": 1000, "max": 5000},
                        {"name": "Platinum", "min": 5000},
                    ]
                }
            ]
        }
    }


class SegmentCreate(Strict):
    management_type: Literal["selfmanaged", "systemmanaged"]
    name: str = Field(min_length=1, max_length=200)
    owner_id: UUID
    project_id: str | None = None
    description: str | None = Field(default=None, max_length=2000)
    properties: dict[str, list[Any]] | None = None
    deprecated_properties: dict[str, Any] | None = None
    approximated_size: int | None = Field(default=None, description="Ignored: it is computed")
    created_at: str | None = Field(default=None, description="Ignored: set by the server")
    updated_at: str | None = Field(default=None, description="Ignored: set by the server")

    model_config = Strict.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "management_type": "selfmanaged",
                    "name": "Seoul women 20s",
                    "owner_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                    "properties": {"city": ["Seoul"], "gender": ["F"]},
                }
            ]
        }
    }


@router.post("/segments", status_code=201, responses=json_example(ex.SEGMENT, 201))
async def create_segment(
    body: SegmentCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    """Seed 003: a segment from `properties` (AND across attributes, OR within one)."""
    return await services.segments.create(caller, body.model_dump())


@router.post("/loyalty-tiers", status_code=201, responses=json_example(ex.LOYALTY_GROUP, 201))
async def create_loyalty_tiers(
    body: LoyaltyTiersCreate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    """One dynamic audience per tier: metric >= min and < max, so tiers never share a user."""
    return await services.groups.create_tiers(caller, body.model_dump())


@router.put("/loyalty-tiers/{group_id}", responses=json_example(ex.LOYALTY_GROUP))
async def update_loyalty_tiers(
    group_id: str, body: LoyaltyTiersUpdate, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    """New tiers are created, existing ones (same name) updated, missing ones deleted."""
    return await services.groups.update_tiers(caller, group_id, body.model_dump())


@router.get("/groups/{group_id}", responses=json_example(ex.LOYALTY_GROUP))
async def get_group(
    group_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.groups.get(caller, group_id, project_id)


@router.get("/groups/{group_id}/members", responses=json_example(ex.GROUP_MEMBERS))
async def group_members(
    group_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
    first: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    audience_id: str | None = None,
) -> dict[str, Any]:
    """Members across the group's audiences (one row per user and audience)."""
    position = None
    if after:
        cursor = services.cursors.decode(after)
        position = (str(cursor.get("user_id")), str(cursor.get("audience_id")))
    items, has_next = await services.groups.members(
        caller, group_id, project_id, first, position, search, audience_id
    )
    end = (
        services.cursors.encode(
            {"user_id": items[-1]["user_id"], "audience_id": items[-1]["audience_id"]}
        )
        if items
        else None
    )
    return {"items": items, "page_info": {"has_next_page": has_next, "end_cursor": end}}


@router.delete(
    "/groups/{group_id}",
    status_code=204,
    responses=no_content("Every audience of the group archived"),
)
async def delete_group(
    group_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> Response:
    """Archive every audience of the group."""
    await services.groups.delete(caller, group_id, project_id)
    return Response(status_code=204)
