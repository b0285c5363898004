"""The API at scale: an exact quota from a counter row, keyset pagination, and all-or-nothing bulk creation."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import VIEWER
from shared.db.queries import sql
from shared.db.repository import schedule_many_params
from shared.model import CronTrigger, EventTarget, MisfirePolicy, RetryPolicy, Schedule, ScheduleStatus
from shared.pagination import MAX_OFFSET, encode_cursor

pytestmark = pytest.mark.asyncio


def body(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
        "labels": {"team": "bench"},
        **extra,
    }


def counted(db_url: str, tenant: str) -> tuple[int, int]:
    """(the counter row, count(*)) of ``tenant``."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            """SELECT (SELECT schedules FROM tenant_schedule_counts WHERE tenant_id = %(t)s),
                      (SELECT count(*) FROM schedules WHERE tenant_id = %(t)s)""",
            {"t": tenant},
        ).fetchone()
    assert row is not None
    return row[0] or 0, row[1]


@pytest.fixture
def wide(settings):
    """Settings with enough connections for real contention."""
    return dataclasses.replace(settings, db_pool_max=12, tenant_rate_limit_rps=10_000, tenant_rate_limit_burst=10_000)


async def test_quota_is_exact_under_concurrent_creates_and_deletes(wide, headers, tenant, db_url):
    async with AsyncTestClient(app=create_app(dataclasses.replace(wide, tenant_max_schedules=20))) as client:
        single = [client.post("/schedules", json=body(f"s{i}"), headers=headers()) for i in range(30)]
        batches = [
            client.post("/schedules:batch", json={"items": [body(f"b{j}-{i}") for i in range(3)]}, headers=headers())
            for j in range(5)
        ]
        answers = await asyncio.gather(*single, *batches)
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {201, 409}
        created = sum(1 for a in answers[:30] if a.status_code == 201) + 3 * sum(
            1 for a in answers[30:] if a.status_code == 201
        )
        assert created <= 20 and created >= 18  # a refused batch of 3 may leave up to 2 free places
        assert counted(db_url, tenant) == (created, created)
        ids = [a.json()["id"] for a in answers[:30] if a.status_code == 201][:5]
        deleted = await asyncio.gather(*(client.delete(f"/schedules/{i}", headers=headers()) for i in ids))
        assert [d.status_code for d in deleted] == [204] * len(ids)
        assert counted(db_url, tenant) == (created - len(ids), created - len(ids))
        # Exactly the free places are taken again, concurrently.
        free = 20 - (created - len(ids))
        again = await asyncio.gather(
            *(client.post("/schedules", json=body(f"r{i}"), headers=headers()) for i in range(free + 6))
        )
        assert sorted(a.status_code for a in again) == [201] * free + [409] * 6
        assert counted(db_url, tenant) == (20, 20)
        listed = await client.get("/schedules", headers=headers(VIEWER))
        assert listed.json()["total"] == 20


async def test_counter_row_is_tenant_scoped_under_row_level_security(client, headers, tenant, db_url):
    assert (await client.post("/schedules", json=body("x"), headers=headers())).status_code == 201
    assert (
        await client.post("/schedules", json=body("x"), headers=headers(tenant_id="o-" + tenant))
    ).status_code == 201
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        rows = conn.execute("SELECT tenant_id, schedules FROM tenant_schedule_counts").fetchall()
        assert rows == [(tenant, 1)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE tenant_schedule_counts SET schedules = 0")


async def test_counter_follows_deletes_and_refuses_tenant_moves(client, headers, tenant, db_url):
    answer = await client.post("/schedules:batch", json={"items": [body(f"n{i}") for i in range(7)]}, headers=headers())
    assert answer.status_code == 201
    assert counted(db_url, tenant) == (7, 7)
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM schedules WHERE tenant_id = %s AND name IN ('n1', 'n2')", (tenant,))
        conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE schedules SET tenant_id = 'elsewhere' WHERE tenant_id = %s", (tenant,))
    assert counted(db_url, tenant) == (5, 5)


async def test_bulk_create_is_all_or_nothing(settings, headers, tenant, db_url):
    async with AsyncTestClient(app=create_app(dataclasses.replace(settings, tenant_max_schedules=10))) as client:
        items = [body(f"a{i}") for i in range(5)]
        items[3] = body("a3", trigger={"type": "CRON", "cron": "not a cron"})
        items[4] = body("a4", tz="Mars/Olympus")
        refused = await client.post("/schedules:batch", json={"items": items}, headers=headers())
        assert refused.status_code == 400, refused.text
        fields = {e["field"] for e in refused.json()["errors"]}
        assert {"items[3].trigger.cron", "items[4].tz"} <= fields
        for wrong, field in (({"catchUpLimit": "10"}, "items[1].catchUpLimit"), ({"surprise": 1}, "items[1].surprise")):
            refused = await client.post(
                "/schedules:batch", json={"items": [body("w0"), {**body("w1"), **wrong}]}, headers=headers()
            )
            assert refused.status_code == 400
            assert [e["field"] for e in refused.json()["errors"]] == [field]
        twice = await client.post("/schedules:batch", json={"items": [body("d"), body("d")]}, headers=headers())
        assert twice.status_code == 400 and twice.json()["errors"][0]["field"] == "items[1].name"
        assert counted(db_url, tenant) == (0, 0)

        stored = await client.post(
            "/schedules:batch", json={"items": [body(f"ok{i}") for i in range(4)]}, headers=headers()
        )
        assert stored.status_code == 201
        got = stored.json()["items"]
        assert [s["name"] for s in got] == [f"ok{i}" for i in range(4)]
        assert all(s["webhookSecret"].startswith("whsec_") for s in got)
        taken = await client.post(
            "/schedules:batch", json={"items": [body("new0"), body("ok2"), body("new1")]}, headers=headers()
        )
        assert taken.status_code == 409 and taken.json()["errors"][0]["field"] == "items[1].name"
        over = await client.post(
            "/schedules:batch", json={"items": [body(f"q{i}") for i in range(7)]}, headers=headers()
        )
        assert over.status_code == 409 and over.json()["title"] == "Quota exceeded"
        assert counted(db_url, tenant) == (4, 4)
        exact = await client.post(
            "/schedules:batch", json={"items": [body(f"q{i}") for i in range(6)]}, headers=headers()
        )
        assert exact.status_code == 201 and counted(db_url, tenant) == (10, 10)

        too_many = await client.post(
            "/schedules:batch", json={"items": [body(f"m{i}") for i in range(1001)]}, headers=headers()
        )
        assert too_many.status_code in (400, 413)
        empty = await client.post("/schedules:batch", json={"items": []}, headers=headers())
        assert empty.status_code == 400 and empty.json()["errors"][0]["field"].startswith("items")
        viewer = await client.post("/schedules:batch", json={"items": [body("v")]}, headers=headers(VIEWER))
        assert viewer.status_code == 403


async def test_cursor_pages_have_no_duplicates_or_gaps_while_inserting(wide, headers, tenant):
    async with AsyncTestClient(app=create_app(wide)) as client:
        first = await client.post(
            "/schedules:batch", json={"items": [body(f"p{i:03}") for i in range(45)]}, headers=headers()
        )
        assert first.status_code == 201
        existing = [s["id"] for s in first.json()["items"]]
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"pageSize": 10, **({"cursor": cursor} if cursor else {})}
            page = await client.get("/schedules", params=params, headers=headers(VIEWER))
            assert page.status_code == 200, page.text
            seen += [s["id"] for s in page.json()["items"]]
            cursor = page.json()["nextCursor"]
            pages += 1
            if pages <= 3:  # schedules created meanwhile come after every existing one
                created = await client.post("/schedules", json=body(f"late{pages}"), headers=headers())
                assert created.status_code == 201
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert seen[: len(existing)] == existing
        assert len(seen) == 48
        # A cursor is a position in the asking tenant's own list only.
        position = encode_cursor(datetime.fromisoformat(first.json()["items"][0]["createdAt"]), existing[0])
        other = await client.get(
            "/schedules", params={"cursor": position}, headers=headers(VIEWER, tenant_id="o-" + tenant)
        )
        assert other.status_code == 200 and other.json()["items"] == []


async def test_list_page_cap_and_bad_cursors(client, headers):
    beyond = await client.get(
        "/schedules", params={"page": MAX_OFFSET // 20 + 2, "pageSize": 20}, headers=headers(VIEWER)
    )
    assert beyond.status_code == 400 and beyond.json()["errors"][0]["field"] == "page"
    within = await client.get(
        "/schedules", params={"page": MAX_OFFSET // 20 + 1, "pageSize": 20}, headers=headers(VIEWER)
    )
    assert within.status_code == 200
    for bad in ("nope", "AAAA", "x" * 150, "%%%"):
        answer = await client.get("/schedules", params={"cursor": bad}, headers=headers(VIEWER))
        assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "cursor", bad
    both = await client.get("/schedules", params={"cursor": "AAAA", "page": 2}, headers=headers(VIEWER))
    assert both.status_code == 400


async def test_filtered_total_is_counted(client, headers):
    await client.post(
        "/schedules:batch",
        json={"items": [body(f"f{i}", labels={"k": "odd" if i % 2 else "even"}) for i in range(9)]},
        headers=headers(),
    )
    odd = await client.get("/schedules", params={"label": "k:odd", "pageSize": 2}, headers=headers(VIEWER))
    assert odd.json()["total"] == 4 and len(odd.json()["items"]) == 2 and odd.json()["nextCursor"]
    rest = await client.get(
        "/schedules",
        params={"label": "k:odd", "pageSize": 5, "cursor": odd.json()["nextCursor"]},
        headers=headers(VIEWER),
    )
    assert [s["labels"]["k"] for s in rest.json()["items"]] == ["odd", "odd"] and rest.json()["nextCursor"] is None


async def test_the_self_scoping_insert_confines_itself_and_leaves_no_setting_behind(db_url, tenant):
    """schedule_insert_many sets the tenant scope inside the statement (autocommit): the rows are the named
    tenant's, and the next statement on the same connection is unscoped again (sees no rows)."""
    now = datetime.now(UTC)
    schedule = Schedule(
        id=str(uuid.uuid4()), tenant_id=tenant, name="scoped", description=None, tz="UTC",
        trigger=CronTrigger(cron="0 9 * * *"), target=EventTarget(event_topic="a.b"), payload=None, enabled=True,
        misfire_policy=MisfirePolicy.FIRE_ONCE,
        catch_up_limit=1, retry=RetryPolicy(), labels={},
        status=ScheduleStatus.ACTIVE, next_run_at=now, last_run_at=None, created_at=now, updated_at=now, version=1,
    )  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE scheduler_api")
        params = {**schedule_many_params(tenant, [(schedule, "k:sealed")], now), "quota": "5"}
        rows = conn.execute(sql("schedule_insert_many"), params).fetchall()
        assert len(rows) == 1
        assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone() in ((None,), ("",))
        assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        assert conn.execute("SELECT tenant_id, name FROM schedules").fetchall() == [(tenant, "scoped")]
