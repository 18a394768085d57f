"""Previews, users and explanations: read-only views that save nothing."""

from typing import Any

from fastapi import APIRouter

from audience_api.routes.deps import ContainerDep, PrincipalDep
from audience_api.routes.examples import insights as ex
from audience_api.routes.examples import json_example
from audience_api.schemas import AudiencePreview, RuleChangePreview

router = APIRouter(prefix="/v1", tags=["insights"])


@router.post("/audiences/preview", responses=json_example(ex.PREVIEW))
async def preview(
    body: AudiencePreview, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.insights.preview(caller, body.model_dump(exclude_none=True))


@router.post("/audiences/{audience_id}/preview-change", responses=json_example(ex.PREVIEW_CHANGE))
async def preview_change(
    audience_id: str, body: RuleChangePreview, caller: PrincipalDep, services: ContainerDep
) -> dict[str, Any]:
    return await services.insights.preview_change(
        caller, audience_id, body.model_dump(exclude_none=True)
    )


@router.get("/users/{user_id}", responses=json_example(ex.USER))
async def get_user(
    user_id: str, caller: PrincipalDep, services: ContainerDep, project_id: str | None = None
) -> dict[str, Any]:
    return await services.insights.user(caller, user_id, project_id)


@router.get(
    "/users/{user_id}/audiences/{audience_id}/explain", responses=json_example(ex.EXPLANATION)
)
async def explain(
    user_id: str,
    audience_id: str,
    caller: PrincipalDep,
    services: ContainerDep,
    project_id: str | None = None,
) -> dict[str, Any]:
    return await services.insights.explain(caller, user_id, audience_id, project_id)
