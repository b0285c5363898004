"""Runs: fire a schedule now, and read the delivery history."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from api.auth import EDITOR, VIEWER, actor_of, require, tenant_in_scope
from api.openapi import TENANT_CHANGE_ONE, TENANT_READ_ONE, TENANT_WRITE_ONE
from api.routes.schedules import Actor, parse_uuid, schedule_uuid
from api.service import Service, TenantId
from shared.model import Run, RunPage, RunStatus


class RunController(Controller):
    tags = ["runs"]
    dependencies = {
        "tenant_id": Provide(tenant_in_scope, sync_to_thread=False),
        "actor": Provide(actor_of, sync_to_thread=False),
    }

    @post(
        "/schedules/{schedule_id:str}/run",
        guards=[require(EDITOR)],
        status_code=202,
        summary="Fire a schedule now, outside its sequence",
        operation_id="runSchedule",
        responses=TENANT_WRITE_ONE,
    )
    async def run_now(self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service) -> Response[Run]:
        run = await service.run_now(tenant_id, schedule_uuid(schedule_id))
        return Response(run, status_code=202, headers={"Location": f"/runs/{run.id}"})

    @get(
        "/schedules/{schedule_id:str}/runs",
        guards=[require(VIEWER)],
        summary="A schedule's runs, newest first",
        operation_id="listRuns",
        responses=TENANT_READ_ONE,
    )
    async def list_runs(
        self,
        schedule_id: FromPath[str],
        tenant_id: TenantId,
        service: Service,
        status: FromQuery[RunStatus | None] = None,
        page: Annotated[int, QueryParameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, QueryParameter(name="pageSize", ge=1, le=200)] = 20,
    ) -> RunPage:
        return await service.runs(tenant_id, schedule_uuid(schedule_id), status, page, page_size)

    @get(
        "/runs/{run_id:str}",
        guards=[require(VIEWER)],
        summary="One run",
        operation_id="getRun",
        responses=TENANT_READ_ONE,
    )
    async def get_run(self, run_id: FromPath[str], tenant_id: TenantId, service: Service) -> Run:
        return await service.run(tenant_id, parse_uuid(run_id, "runId"))

    @post(
        "/runs/{run_id:str}/cancel",
        guards=[require(EDITOR)],
        status_code=200,
        summary="Cancel a run that is PENDING or RETRYING",
        operation_id="cancelRun",
        responses=TENANT_CHANGE_ONE,
        description="A run waiting for a worker or for its next attempt becomes CANCELLED and is not delivered. "
        "`409` when it is finished, or when an attempt is under way right now (retry once it is RETRYING). A "
        "FIXED_DELAY schedule waiting for the run is re-armed from now.",
    )
    async def cancel_run(self, run_id: FromPath[str], tenant_id: TenantId, service: Service, actor: Actor) -> Run:
        return await service.cancel_run(tenant_id, parse_uuid(run_id, "runId"), actor)
