"""/triggers/preview: check a trigger and list its fire times without storing anything."""

from __future__ import annotations

from litestar import post

from api.auth import VIEWER, require
from api.service import ScheduleService
from shared.model import FireTimes, TriggerPreviewRequest


@post("/triggers/preview", guards=[require(VIEWER)], status_code=200, tags=["triggers"],
      summary="Fire times of a trigger, strictly after `after` (default now)")
async def preview_trigger(data: TriggerPreviewRequest, service: ScheduleService) -> FireTimes:
    return service.preview_trigger(data)
