"""Per-tenant quotas: the number of schedules and the API request rate."""

from __future__ import annotations

import dataclasses

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import VIEWER

pytestmark = pytest.mark.asyncio


def body(name: str) -> dict[str, object]:
    return {
        "name": name,
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
    }


async def test_schedule_quota(settings, headers, tenant):
    async with AsyncTestClient(app=create_app(dataclasses.replace(settings, tenant_max_schedules=2))) as client:
        for name in ("a", "b"):
            assert (await client.post("/schedules", json=body(name), headers=headers())).status_code == 201
        refused = await client.post("/schedules", json=body("c"), headers=headers())
        assert refused.status_code == 409 and refused.json()["title"] == "Quota exceeded"
        assert tenant in refused.json()["detail"]
        other = await client.post("/schedules", json=body("c"), headers=headers(tenant_id="other-" + tenant))
        assert other.status_code == 201  # the quota is per tenant


async def test_request_rate_limit(settings, headers, tenant):
    limited = dataclasses.replace(settings, tenant_rate_limit_rps=0.5, tenant_rate_limit_burst=3)
    async with AsyncTestClient(app=create_app(limited)) as client:
        statuses = [(await client.get("/schedules", headers=headers(VIEWER))).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await client.get("/schedules", headers=headers(VIEWER))
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) >= 1
        other = await client.get("/schedules", headers=headers(VIEWER, tenant_id="other-" + tenant))
        assert other.status_code == 200  # another tenant has its own bucket
        assert (await client.get("/live")).status_code == 200  # health checks are never limited
