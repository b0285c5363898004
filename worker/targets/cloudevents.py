"""The CloudEvents 1.0 JSON envelope every NATS delivery carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from worker.fire import utc_iso

SOURCE = "/scheduler"


class _Envelope(msgspec.Struct):
    """The fields in the order they are written: a struct encodes in about half the time of a dict."""

    specversion: str
    id: str
    source: str
    type: str
    time: str
    subject: str
    datacontenttype: str
    data: Any
    tenantid: str
    scheduledfor: str
    runid: str


_encode = msgspec.json.Encoder().encode


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
    return _encode(
        _Envelope(
            specversion="1.0",
            id=key,
            source=f"{SOURCE}/tenants/{tenant_id}/schedules/{schedule_id}",
            type=event_type,
            time=utc_iso(now),
            subject=schedule_id,
            datacontenttype="application/json",
            data=data,
            tenantid=tenant_id,
            scheduledfor=utc_iso(scheduled_for),
            runid=run_id,
        )
    )
