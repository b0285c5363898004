"""/triggers/preview: check a trigger and list its fire times without storing anything."""

from __future__ import annotations

from litestar import Request, post
from litestar.params import JSONBody

from api.auth import VIEWER, require
from api.openapi import TRIGGER_PREVIEW
from api.problems import strict_body
from api.service import Service
from shared.model import FireTimes, TriggerPreviewRequest


@post(
    "/triggers/preview",
    guards=[require(VIEWER)],
    status_code=200,
    tags=["triggers"],
    summary="Fire times of a trigger, strictly after `after` (default now)",
    operation_id="previewTrigger",
    responses=TRIGGER_PREVIEW,
)
async def preview_trigger(data: JSONBody[TriggerPreviewRequest], request: Request, service: Service) -> FireTimes:
    return service.preview_trigger(strict_body(await request.body(), TriggerPreviewRequest))
