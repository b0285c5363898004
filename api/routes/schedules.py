"""/schedules: create, list, read, update, delete and preview a tenant's schedules."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from api.auth import EDITOR, VIEWER, require, tenant_in_scope
from api.openapi import (
    EXPLAIN_PARAM,
    TENANT_CREATE,
    TENANT_PREVIEW_ONE,
    TENANT_READ,
    TENANT_READ_ONE,
    TENANT_UPDATE,
    TENANT_WRITE_ONE,
)
from api.problems import strict_body
from api.service import Service, TenantId
from shared.db.repository import ListFilter
from shared.errors import InvalidInput
from shared.model import FireTimes, Schedule, ScheduleCreate, SchedulePage, ScheduleUpdate
from shared.schedules import check_body_tenant
from shared.validation import check_query_text

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


def with_etag(schedule: Schedule, status: int = 200, location: bool = False) -> Response[Schedule]:
    headers = {"ETag": f'"{schedule.version}"'}
    if location:
        headers["Location"] = f"/schedules/{schedule.id}"
    return Response(schedule, status_code=status, headers=headers)


class ScheduleController(Controller):
    path = "/schedules"
    tags = ["schedules"]
    dependencies = {"tenant_id": Provide(tenant_in_scope, sync_to_thread=False)}

    @post(
        "/",
        guards=[require(EDITOR)],
        summary="Create a schedule",
        operation_id="createSchedule",
        responses=TENANT_CREATE,
    )
    async def create(
        self, data: JSONBody[ScheduleCreate], request: Request, tenant_id: TenantId, service: Service
    ) -> Response[Schedule]:
        body = strict_body(await request.body(), ScheduleCreate)
        return with_etag(await service.create(tenant_id, body), status=201, location=True)

    @get("/", guards=[require(VIEWER)], summary="List schedules", operation_id="listSchedules", responses=TENANT_READ)
    async def list_schedules(
        self,
        tenant_id: TenantId,
        service: Service,
        query_tenant: Annotated[str | None, QueryParameter(name="tenantId")] = None,
        page: Annotated[int, QueryParameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, QueryParameter(name="pageSize", ge=1, le=200)] = 20,
        enabled: FromQuery[bool | None] = None,
        name: Annotated[str | None, QueryParameter(description="name prefix", max_length=200)] = None,
        label: Annotated[list[str] | None, QueryParameter(description="key:value, repeatable")] = None,
    ) -> SchedulePage:
        check_body_tenant(query_tenant, tenant_id)
        check_query_text(name, "name")
        for item in label or []:
            check_query_text(item, "label")
        where = ListFilter(enabled=enabled, name_prefix=name, labels=parse_labels(label))
        return await service.list(tenant_id, where, page, page_size)

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
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Schedule]:
        body = strict_body(await request.body(), ScheduleUpdate)
        updated = await service.update(tenant_id, schedule_uuid(schedule_id), body, parse_if_match(if_match))
        return with_etag(updated)

    @delete(
        "/{schedule_id:str}",
        guards=[require(EDITOR)],
        summary="Delete a schedule",
        operation_id="deleteSchedule",
        responses=TENANT_WRITE_ONE,
    )
    async def remove(self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service) -> None:
        await service.delete(tenant_id, schedule_uuid(schedule_id))

    @post(
        "/{schedule_id:str}/secret:rotate",
        guards=[require(EDITOR)],
        status_code=200,
        summary="Replace the webhook signing secret; the new one is shown in this answer only",
        operation_id="rotateScheduleSecret",
        responses=TENANT_WRITE_ONE,
    )
    async def rotate_secret(self, schedule_id: FromPath[str], tenant_id: TenantId, service: Service) -> Schedule:
        return await service.rotate_secret(tenant_id, schedule_uuid(schedule_id))

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
