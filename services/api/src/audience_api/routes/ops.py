"""What the ops dashboard reads: the pipeline's health and a project's recent runs."""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from audience_api.ops import RUN_KINDS, PipelineService, RunHistoryService, RunKind
from audience_api.routes.deps import PrincipalDep
from audience_api.routes.examples import json_example
from audience_api.routes.examples import ops as ex

router = APIRouter(prefix="/v1/ops", tags=["ops"])


@dataclass(frozen=True)
class OpsServices:
    pipeline: PipelineService
    runs: RunHistoryService


def ops_services(request: Request) -> OpsServices:
    return request.app.state.ops  # type: ignore[no-any-return]


OpsDep = Annotated[OpsServices, Depends(ops_services)]


@router.get("/pipeline", responses=json_example(ex.PIPELINE))
async def pipeline(caller: PrincipalDep, ops: OpsDep) -> dict[str, Any]:
    """Consumer lag per partition, offset totals (two readings give rates), each service's
    readiness."""
    return await ops.pipeline.pipeline(caller)


@router.get("/runs", responses=json_example(ex.RUNS))
async def recent_runs(
    caller: PrincipalDep,
    ops: OpsDep,
    project_id: str | None = None,
    kind: Annotated[list[RunKind] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Sync runs, CSV imports and unloads of a project, newest first."""
    items = await ops.runs.recent(caller, project_id, kind or list(RUN_KINDS), limit)
    return {"items": items}
