"""The CloudEvents 1.0 JSON envelope every NATS delivery carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

SOURCE = "/scheduler"


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(
    *,
    key: str,
    event_type: str,
    schedule_id: str,
    tenant_id: str,
    scheduled_for: datetime,
    now: datetime,
    data: Any,
    run_id: str,
) -> bytes:
    return msgspec.json.encode(
        {
            "specversion": "1.0",
            "id": key,
            "source": f"{SOURCE}/tenants/{tenant_id}/schedules/{schedule_id}",
            "type": event_type,
            "time": _iso(now),
            "subject": schedule_id,
            "datacontenttype": "application/json",
            "data": data,
            "tenantid": tenant_id,
            "scheduledfor": _iso(scheduled_for),
            "runid": run_id,
        }
    )
