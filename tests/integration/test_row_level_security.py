"""Row-level security: the API's database role sees one tenant per transaction even when a query forgets to
filter by tenant; the workers' role sees all tenants but cannot delete."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.asyncio


def body(name: str) -> dict[str, object]:
    return {
        "name": name,
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
    }


async def test_an_unscoped_query_through_the_api_role_sees_one_tenant(client, headers, tenant, db_url):
    other = "other-" + tenant
    for t in (tenant, other):
        assert (await client.post("/schedules", json=body("rls"), headers=headers(tenant_id=t))).status_code == 201
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        # The bug this protects against: no WHERE tenant_id.
        seen = {r[0] for r in conn.execute("SELECT tenant_id FROM schedules WHERE name = 'rls'")}
        assert seen == {tenant}
        changed = conn.execute("UPDATE schedules SET description = 'x' WHERE name = 'rls'").rowcount
        assert changed == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE schedules SET tenant_id = %s WHERE name = 'rls'", (other,))
        conn.rollback()

        conn.execute("SET ROLE scheduler_api")
        assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)  # no tenant set: no rows
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        conn.rollback()


async def test_the_worker_role_sees_every_tenant_but_cannot_delete(client, headers, tenant, db_url):
    await client.post("/schedules", json=body("worker-view"), headers=headers())
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE scheduler_worker")
        tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM schedules")}
        assert tenant in tenants and len(tenants) > 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM schedules WHERE tenant_id = %s", (tenant,))
        conn.rollback()
