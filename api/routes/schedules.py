"""/schedules: create, list, read, update, delete and preview a tenant's schedules."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from api.auth import EDITOR, VIEWER, actor_of, require, tenant_in_scope
from api.openapi import (
    EXPLAIN_PARAM,
    TENANT_BULK,
    TENANT_CHANGE_ONE,
    TENANT_CREATE,
    TENANT_PREVIEW_ONE,
    TENANT_READ,
    TENANT_READ_ONE,
    TENANT_UPDATE,
    TENANT_WRITE_ONE,
)
from api.problems import strict_body, strict_items
from api.service import Service, TenantId
from shared.db.repository import ListFilter
from shared.errors import InvalidInput
from shared.model import (
    AuditPage,
    BackfillRequest,
    BackfillResult,
    BulkRequest,
    BulkResult,
    CatchupPreview,
    FireTimes,
    PauseRequest,
    Schedule,
    ScheduleApply,
    ScheduleBatch,
    ScheduleBatchCreate,
    ScheduleCreate,
    SchedulePage,
    ScheduleSort,
    ScheduleStatus,
    ScheduleUpdate,
    TargetKind,
)
from shared.pagination import MAX_OFFSET
from shared.schedules import check_body_tenant
from shared.validation import check_instant, check_name, check_query_text, raise_if

Actor = NamedDependency[str]

MAX_BATCH = 1000
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput.field(field, "must be a UUID") from None


def schedule_uuid(schedule_id: str) -> str:
    return parse_uuid(schedule_id, "id")


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    match = _ETAG.match(value)
    if not match:
        raise InvalidInput.field("If-Match", 'must be the schedule version as an ETag, e.g. "3"')
    return int(match.group(1))


def parse_labels(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    labels = {}
    for item in values:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidInput.field("label", f"{item!r} is not key:value")
        labels[key] = value
    return labels


def parse_if_none_match(value: str | None) -> bool:
    if value is None:
        return False
    if value.strip() != "*":
        raise InvalidInput.field("If-None-Match", 'only "*" (create, never update) is supported')
    return True


def aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput.field(field, "must carry a UTC offset (e.g. 2026-03-29T00:00:00Z)")
    raise_if(check_instant(value, field))
    return value


def optional_body(raw: bytes, kind: type[PauseRequest]) -> PauseRequest:
    return strict_body(raw, kind) if raw.strip() else kind()


def by_name_body(raw: bytes, name: str) -> ScheduleCreate:
    """The PUT body as the schedule to store: the path's name, which a ``name`` in the body must equal."""
    body = strict_body(raw, ScheduleApply)
    if body.name is not None and body.name != name:
        raise InvalidInput.field("name", "differs from the name in the path")
    return ScheduleCreate(**{**msgspec.structs.asdict(body), "name": name})


def with_etag(schedule: Schedule, status: int = 200, location: bool = False) -> Response[Schedule]:
    headers = {"ETag": f'"{schedule.version}"'}
    if location:
        headers["Location"] = f"/schedules/{schedule.id}"
    return Response(schedule, status_code=status, headers=headers)


class ScheduleController(Controller):
    path = "/schedules"
    tags = ["schedules"]
    dependencies = {
        "tenant_id": Provide(tenant_in_scope, sync_to_thread=False),
        "actor": Provide(actor_of, sync_to_thread=False),
    }

    @post(
        "/",
        guards=[require(EDITOR)],
        summary="Create a schedule",
        operation_id="createSchedule",
        responses=TENANT_CREATE,
    )
    async def create(
        self, data: JSONBody[ScheduleCreate], request: Request, tenant_id: TenantId, service: Service, actor: Actor
    ) -> Response[Schedule]:
        body = strict_body(await request.body(), ScheduleCreate)
        return with_etag(await service.create(tenant_id, body, actor), status=201, location=True)

    @get(
        "/",
        guards=[require(VIEWER)],
        summary="List schedules, filtered and sorted",
        description="Filters combine with AND; repeated `status` / `targetKind` / `label` values combine with OR "
        "(`label`: AND). `nextRunBefore` / `nextRunAfter` only match schedules with a next run (paused and "
        "completed ones have none). Unknown parameters and values are a 400 naming the parameter.",
        operation_id="listSchedules",
        responses=TENANT_READ,
    )
    async def list_schedules(
        self,
        tenant_id: TenantId,
        service: Service,
        query_tenant: Annotated[str | None, QueryParameter(name="tenantId")] = None,
        page: Annotated[
            int,
            QueryParameter(
                ge=1,
                le=1_000_000,
                description=f"deprecated past the first {MAX_OFFSET} schedules (400 there): page on with `cursor`",
            ),
        ] = 1,
        cursor: Annotated[
            str | None,
            QueryParameter(description="`nextCursor` of the previous page: the page after it", max_length=200),
        ] = None,
        page_size: Annotated[int, QueryParameter(name="pageSize", ge=1, le=200)] = 20,
        enabled: FromQuery[bool | None] = None,
        name: Annotated[str | None, QueryParameter(description="name prefix", max_length=200)] = None,
        label: Annotated[list[str] | None, QueryParameter(description="key:value, repeatable")] = None,
        status: Annotated[list[ScheduleStatus] | None, QueryParameter(description="repeatable")] = None,
        target_kind: Annotated[
            list[TargetKind] | None, QueryParameter(name="targetKind", description="repeatable")
        ] = None,
        next_run_before: Annotated[
            datetime | None, QueryParameter(name="nextRunBefore", description="nextRunAt < this instant")
        ] = None,
        next_run_after: Annotated[
            datetime | None, QueryParameter(name="nextRunAfter", description="nextRunAt > this instant")
        ] = None,
        sort: Annotated[
            ScheduleSort, QueryParameter(description="order; `-` descends; schedules without a next run sort last")
        ] = ScheduleSort.CREATED_AT,
    ) -> SchedulePage:
        check_body_tenant(query_tenant, tenant_id)
        check_query_text(name, "name")
        for item in label or []:
            check_query_text(item, "label")
        where = ListFilter(
            enabled=enabled,
            name_prefix=name,
            labels=parse_labels(label),
            statuses=tuple(status or ()),
            target_kinds=tuple(target_kind or ()),
            next_run_before=aware(next_run_before, "nextRunBefore"),
            next_run_after=aware(next_run_after, "nextRunAfter"),
            sort=sort,
        )
        return await service.list(tenant_id, where, page, page_size, cursor)

    @get(
        "/{schedule_id:str}",
        guards=[require(VIEWER)],
        summary="Get a schedule",
        operation_id="getSchedule",
        responses=TENANT_READ_ONE,
    )
    async def get_schedule(
        self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service
    ) -> Response[Schedule]:
        return with_etag(await service.get(tenant_id, schedule_uuid(schedule_id)))

    @patch(
        "/{schedule_id:str}",
        guards=[require(EDITOR)],
        summary="Update a schedule (partial)",
        operation_id="updateSchedule",
        responses=TENANT_UPDATE,
    )
    async def update(
        self,
        schedule_id: FromPath[str],
        data: JSONBody[ScheduleUpdate],
        request: Request,
        tenant_id: TenantId,
        service: Service,
        actor: Actor,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Schedule]:
        body = strict_body(await request.body(), ScheduleUpdate)
        updated = await service.update(tenant_id, schedule_uuid(schedule_id), body, parse_if_match(if_match), actor)
        return with_etag(updated)

    @delete(
        "/{schedule_id:str}",
        guards=[require(EDITOR)],
        summary="Delete a schedule",
        operation_id="deleteSchedule",
        responses=TENANT_WRITE_ONE,
    )
    async def remove(self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service, actor: Actor) -> None:
        await service.delete(tenant_id, schedule_uuid(schedule_id), actor)

    @post(
        "/{schedule_id:str}/secret:rotate",
        guards=[require(EDITOR)],
        status_code=200,
        summary="Replace the webhook signing secret; the new one is shown in this answer only",
        operation_id="rotateScheduleSecret",
        responses=TENANT_WRITE_ONE,
    )
    async def rotate_secret(
        self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service, actor: Actor
    ) -> Schedule:
        return await service.rotate_secret(tenant_id, schedule_uuid(schedule_id), actor)

    @get(
        "/{schedule_id:str}/preview",
        guards=[require(VIEWER)],
        summary="Next fire times of a schedule",
        operation_id="previewSchedule",
        responses=TENANT_PREVIEW_ONE,
    )
    async def preview(
        self,
        schedule_id: FromPath[str],
        tenant_id: TenantId,
        service: Service,
        count: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
        explain: Annotated[bool, QueryParameter(description=EXPLAIN_PARAM)] = False,
    ) -> FireTimes:
        return await service.preview(tenant_id, schedule_uuid(schedule_id), count, explain)

    @get(
        "/{schedule_id:str}/history",
        operation_id="getScheduleHistory",
        responses=TENANT_READ_ONE,
        guards=[require(VIEWER)],
        summary="A schedule's audit trail, newest first",
        description="Who (the token's `sub`) changed what and when, with the version before and after and the "
        "schedule as shown then (secret header values masked). Kept after the schedule is deleted.",
    )
    async def history(
        self,
        schedule_id: FromPath[str],
        tenant_id: TenantId,
        service: Service,
        page: Annotated[int, QueryParameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, QueryParameter(name="pageSize", ge=1, le=200)] = 20,
    ) -> AuditPage:
        return await service.history(tenant_id, schedule_uuid(schedule_id), page, page_size)

    @post(
        "/{schedule_id:str}/pause",
        operation_id="pauseSchedule",
        responses=TENANT_CHANGE_ONE,
        guards=[require(EDITOR)],
        status_code=200,
        summary="Pause a schedule, with an optional reason",
        description='Body `{"reason": "..."}` (optional). A paused schedule fires nothing and shows '
        "`nextRunAt: null`, `status: PAUSED` and `pausedReason` / `pausedAt` / `pausedBy`. Pausing a paused "
        "schedule only updates its reason (no new version when nothing changes).",
    )
    async def pause(
        self,
        schedule_id: FromPath[str],
        request: Request,
        tenant_id: TenantId,
        service: Service,
        actor: Actor,
        data: JSONBody[PauseRequest | None] = None,
    ) -> Response[Schedule]:
        body = optional_body(await request.body(), PauseRequest)
        return with_etag(await service.pause(tenant_id, schedule_uuid(schedule_id), body, actor))

    @post(
        "/{schedule_id:str}/resume",
        operation_id="resumeSchedule",
        responses=TENANT_CHANGE_ONE,
        guards=[require(EDITOR)],
        status_code=200,
        summary="Resume a paused schedule",
        description="Its next run is computed from now (occurrences while paused are not replayed; use backfill). "
        "Resuming an active schedule changes nothing.",
    )
    async def resume(
        self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service, actor: Actor
    ) -> Response[Schedule]:
        return with_etag(await service.resume(tenant_id, schedule_uuid(schedule_id), actor))

    @put(
        "/by-name/{name:str}",
        operation_id="applyScheduleByName",
        responses=TENANT_UPDATE,
        guards=[require(EDITOR)],
        summary="Create or update a schedule by name (idempotent, for GitOps and Terraform)",
        description="The body is a schedule as for POST (its `name` may be left out). `201` when created, `200` "
        "when it existed; a body equal to the stored schedule changes nothing and keeps the version. "
        '`If-Match: "<version>"` updates only that version (412 otherwise, and when none exists); '
        "`If-None-Match: *` only creates (412 when it exists).",
    )
    async def apply_by_name(
        self,
        name: FromPath[str],
        data: JSONBody[ScheduleApply],
        request: Request,
        tenant_id: TenantId,
        service: Service,
        actor: Actor,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
        if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match")] = None,
    ) -> Response[Schedule]:
        raise_if(check_name(name))
        body = by_name_body(await request.body(), name)
        stored, created = await service.apply_by_name(
            tenant_id, name, body, parse_if_match(if_match), parse_if_none_match(if_none_match), actor
        )
        return with_etag(stored, status=201 if created else 200, location=created)

    async def _bulk(self, action: str, request: Request, tenant_id: str, service: Service, actor: str) -> BulkResult:
        return await service.bulk(tenant_id, action, strict_body(await request.body(), BulkRequest), actor)

    @post(
        "/bulk/pause",
        operation_id="bulkPauseSchedules",
        responses=TENANT_BULK,
        guards=[require(EDITOR)],
        status_code=200,
        summary="Pause every schedule carrying these labels",
        description="Body `{labels: {k: v, ...}, reason?, dryRun?}`: every label must match (at least one). At "
        "most BULK_MAX_SCHEDULES may match (400 otherwise); all change in one transaction, each audited.",
    )
    async def bulk_pause(
        self, data: JSONBody[BulkRequest], request: Request, tenant_id: TenantId, service: Service, actor: Actor
    ) -> BulkResult:
        return await self._bulk("pause", request, tenant_id, service, actor)

    @post(
        "/bulk/resume",
        operation_id="bulkResumeSchedules",
        responses=TENANT_BULK,
        guards=[require(EDITOR)],
        status_code=200,
        summary="Resume every schedule carrying these labels",
        description="As bulk pause (no reason).",
    )
    async def bulk_resume(
        self, data: JSONBody[BulkRequest], request: Request, tenant_id: TenantId, service: Service, actor: Actor
    ) -> BulkResult:
        return await self._bulk("resume", request, tenant_id, service, actor)

    @post(
        "/bulk/delete",
        operation_id="bulkDeleteSchedules",
        responses=TENANT_BULK,
        guards=[require(EDITOR)],
        status_code=200,
        summary="Delete every schedule carrying these labels",
        description="As bulk pause (no reason); their runs and audit trails stay readable.",
    )
    async def bulk_delete(
        self, data: JSONBody[BulkRequest], request: Request, tenant_id: TenantId, service: Service, actor: Actor
    ) -> BulkResult:
        return await self._bulk("delete", request, tenant_id, service, actor)

    @post(
        "/{schedule_id:str}/backfill",
        operation_id="backfillSchedule",
        responses=TENANT_CHANGE_ONE,
        guards=[require(EDITOR)],
        status_code=200,
        summary="Record the runs the trigger would have fired in a past range",
        description="Body `{from, to, overlap?, dryRun?}` (`from` <= fire time <= `to` <= now). Each run gets "
        "the id and idempotency key a worker would have given it, so an occurrence already recorded is not "
        "recorded again and a receiver deduplicates. At most BACKFILL_MAX_RUNS (400 beyond). `overlap: SKIP` "
        "refuses (409) while a run of the schedule is open. `dryRun: true` lists them and records nothing.",
    )
    async def backfill(
        self,
        schedule_id: FromPath[str],
        data: JSONBody[BackfillRequest],
        request: Request,
        tenant_id: TenantId,
        service: Service,
        actor: Actor,
    ) -> BackfillResult:
        body = strict_body(await request.body(), BackfillRequest)
        return await service.backfill(tenant_id, schedule_uuid(schedule_id), body, actor)

    @get(
        "/{schedule_id:str}/catchup-preview",
        operation_id="previewScheduleCatchUp",
        responses=TENANT_PREVIEW_ONE,
        guards=[require(VIEWER)],
        summary="What the misfire policy would replay after an outage (dry run)",
        description="The runs a worker would record if none had run from `since` until `until` (default now), "
        "with their ids and idempotency keys, under the schedule's misfirePolicy and catchUpLimit.",
    )
    async def catchup_preview(
        self,
        schedule_id: FromPath[str],
        tenant_id: TenantId,
        service: Service,
        # Optional in the signature only so that the tenant is checked first; required below.
        since: Annotated[datetime | None, QueryParameter(description="when the outage began (required)")] = None,
        until: Annotated[datetime | None, QueryParameter(description="when it ended (default: now)")] = None,
    ) -> CatchupPreview:
        start = aware(since, "since")
        if start is None:
            raise InvalidInput.field("since", "is required: when the outage began")
        return await service.catchup_preview(tenant_id, schedule_uuid(schedule_id), start, aware(until, "until"))


@post(
    "/schedules:batch",
    guards=[require(EDITOR)],
    dependencies={
        "tenant_id": Provide(tenant_in_scope, sync_to_thread=False),
        "actor": Provide(actor_of, sync_to_thread=False),
    },
    tags=["schedules"],
    operation_id="createSchedules",
    responses=TENANT_CREATE,
    summary=f"Create up to {MAX_BATCH} schedules at once, all or none",
    description="Every item is validated; a 400 lists the problems of all items, each field named "
    "`items[i].<field>`. The answer lists the stored schedules in the order sent, each with its webhook secret "
    "(shown this once).",
)
async def create_batch(
    data: JSONBody[ScheduleBatchCreate], request: Request, tenant_id: TenantId, service: Service, actor: Actor
) -> Response[ScheduleBatch]:
    bodies = strict_items(await request.body(), ScheduleCreate, MAX_BATCH)
    return Response(ScheduleBatch(items=await service.create_many(tenant_id, bodies, actor)), status_code=201)
