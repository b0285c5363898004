"""/triggers/preview: check a trigger and list its fire times without storing anything."""

from __future__ import annotations

from litestar import Request, post
from litestar.di import Provide
from litestar.params import JSONBody

from api.auth import VIEWER, require, tenant_in_scope
from api.openapi import TRIGGER_PREVIEW
from api.problems import strict_body
from api.service import Service, TenantId
from shared.model import FireTimes, TriggerPreviewRequest


@post(
    "/triggers/preview",
    guards=[require(VIEWER)],
    # Evaluating a trigger costs CPU: the caller names a tenant its token grants, and the request counts
    # against that tenant's and the caller's rate limits like any other.
    dependencies={"tenant_id": Provide(tenant_in_scope, sync_to_thread=False)},
    status_code=200,
    tags=["triggers"],
    summary="Fire times of a trigger, strictly after `after` (default now)",
    operation_id="previewTrigger",
    responses=TRIGGER_PREVIEW,
)
async def preview_trigger(
    data: JSONBody[TriggerPreviewRequest], request: Request, tenant_id: TenantId, service: Service
) -> FireTimes:
    return await service.preview_trigger(tenant_id, strict_body(await request.body(), TriggerPreviewRequest))
