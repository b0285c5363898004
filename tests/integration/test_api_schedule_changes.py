"""Issue 12, the API side, against a real Postgres: audit trail, pause/resume, create-or-update by name, bulk
changes by label, list filters and sorting, strict query parameters, run cancel, backfill and catch-up preview.
Each route is also checked from another tenant (404) and with a too-weak role (403)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import EDITOR, VIEWER
from api.devmode import mint_dev_token
from api.service import ScheduleService
from shared.db.pool import make_pool
from shared.db.repository import Repository
from shared.model import BulkRequest, ScheduleCreate
from shared.occurrences import idempotency_key, occurrence_run_id
from shared.secrets import key_ring
from tests.integration.conftest import Headers
from tests.integration.test_api_schedules import assert_problem, create, cron_body

pytestmark = pytest.mark.asyncio


def other_tenant(headers: Headers, role: str = EDITOR) -> dict[str, str]:
    return headers(role, tenant_id=f"t-{uuid.uuid4().hex[:10]}")


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --- audit trail ------------------------------------------------------------------------------------------


async def test_history_records_who_changed_what_with_versions(client, headers, dev_dir, tenant):
    alice = {
        "Authorization": f"Bearer {mint_dev_token(dev_dir, [tenant], [EDITOR], subject='alice')}",
        "X-Tenant-Id": tenant,
    }
    created = (await client.post("/schedules", json=cron_body("audited"), headers=alice)).json()
    sid = created["id"]
    patched = await client.patch(f"/schedules/{sid}", json={"description": "new"}, headers=alice)
    assert patched.status_code == 200
    await client.post(f"/schedules/{sid}/pause", json={"reason": "maintenance"}, headers=alice)
    await client.post(f"/schedules/{sid}/resume", headers=alice)
    await client.post(f"/schedules/{sid}/secret:rotate", headers=alice)
    history = await client.get(f"/schedules/{sid}/history", headers=headers(VIEWER))
    assert history.status_code == 200, history.text
    page = history.json()
    actions = [e["action"] for e in page["items"]]
    assert actions == ["SECRET_ROTATED", "RESUMED", "PAUSED", "UPDATED", "CREATED"]
    assert page["total"] == 5 and all(e["actor"] == "alice" for e in page["items"])
    by_action = {e["action"]: e for e in page["items"]}
    created_entry = by_action["CREATED"]
    assert created_entry["versionBefore"] is None and created_entry["versionAfter"] == 1
    assert created_entry["before"] is None and created_entry["after"]["name"] == "audited"
    update = by_action["UPDATED"]
    assert (update["versionBefore"], update["versionAfter"]) == (1, 2)
    assert update["changed"] == ["description"]
    assert update["before"]["description"] is None and update["after"]["description"] == "new"
    paused = by_action["PAUSED"]
    assert paused["detail"] == {"reason": "maintenance"} and "pausedReason" in paused["changed"]
    assert by_action["SECRET_ROTATED"]["changed"] == ["webhookSecret"]
    # Paging, newest first.
    second = (await client.get(f"/schedules/{sid}/history?page=2&pageSize=2", headers=headers(VIEWER))).json()
    assert [e["action"] for e in second["items"]] == ["PAUSED", "UPDATED"]
    # Deleting keeps the history, with who deleted it.
    assert (await client.delete(f"/schedules/{sid}", headers=alice)).status_code == 204
    after_delete = (await client.get(f"/schedules/{sid}/history", headers=headers(VIEWER))).json()
    assert after_delete["items"][0]["action"] == "DELETED" and after_delete["items"][0]["after"] is None
    assert after_delete["items"][0]["before"]["version"] == 5


async def test_history_never_holds_a_secret(client, headers, db_url, receiver_url="https://example.com/hook"):
    body = cron_body(
        "secretive",
        target={"kind": "HTTP", "http": {"url": receiver_url, "secretHeaders": {"Authorization": "Bearer s3cr3t"}}},
    )
    created = await create(client, headers, body)
    rotated = (await client.post(f"/schedules/{created['id']}/secret:rotate", headers=headers())).json()
    patched = await client.patch(
        f"/schedules/{created['id']}",
        json={"target": {"kind": "HTTP", "http": {"url": receiver_url, "secretHeaders": {"Authorization": "other1"}}}},
        headers=headers(),
    )
    assert patched.status_code == 200, patched.text
    history = await client.get(f"/schedules/{created['id']}/history", headers=headers())
    text = history.text
    for secret in ("s3cr3t", "other1", created["webhookSecret"], rotated["webhookSecret"]):
        assert secret not in text
    assert "********" in text
    # A new secret header value shows as a change of the target, without the value.
    assert history.json()["items"][0]["changed"] == ["target"]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT before::text, after::text, detail::text FROM schedule_audit WHERE schedule_id = %s",
            (created["id"],),
        ).fetchall()
    stored = " ".join(str(c) for row in rows for c in row)
    assert len(rows) == 3 and "s3cr3t" not in stored and "other1" not in stored and "whsec_" not in stored


async def test_history_is_tenant_isolated_and_read_only_for_viewers(client, headers, db_url):
    created = await create(client, headers, cron_body("mine"))
    assert_problem(await client.get(f"/schedules/{created['id']}/history", headers=other_tenant(headers)), 404)
    assert_problem(await client.get(f"/schedules/{uuid.uuid4()}/history", headers=headers()), 404)
    assert_problem(await client.get(f"/schedules/{created['id']}/history?pageSize=201", headers=headers()), 400)
    # Row-level security as the API's role: another tenant's audit rows are invisible even without a WHERE.
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', 'someone-else', true)")
        assert conn.execute("SELECT count(*) FROM schedule_audit").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM schedule_audit")


async def test_a_change_that_fails_leaves_no_audit_entry(client, headers):
    created = await create(client, headers, cron_body("kept"))
    stale = await client.patch(
        f"/schedules/{created['id']}", json={"description": "x"}, headers={**headers(), "If-Match": '"9"'}
    )
    assert_problem(stale, 412)
    await create(client, headers, cron_body("taken"))
    clash = await client.patch(f"/schedules/{created['id']}", json={"name": "taken"}, headers=headers())
    assert_problem(clash, 409, "name")
    history = (await client.get(f"/schedules/{created['id']}/history", headers=headers())).json()
    assert [e["action"] for e in history["items"]] == ["CREATED"]


# --- pause and resume -------------------------------------------------------------------------------------


async def test_pause_with_a_reason_then_resume(client, headers, dev_dir, tenant):
    created = await create(client, headers, cron_body("pausable"))
    paused = await client.post(f"/schedules/{created['id']}/pause", json={"reason": "vendor outage"}, headers=headers())
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["status"] == "PAUSED" and body["enabled"] is False and body["nextRunAt"] is None
    assert body["pausedReason"] == "vendor outage" and body["pausedBy"] == f"user-{tenant}" and body["pausedAt"]
    assert body["version"] == 2 and paused.headers["etag"] == '"2"'
    fetched = (await client.get(f"/schedules/{created['id']}", headers=headers(VIEWER))).json()
    assert fetched["nextRunAt"] is None and fetched["pausedReason"] == "vendor outage"
    # Pausing again: the same reason changes nothing; a new one only the reason.
    again = (
        await client.post(f"/schedules/{created['id']}/pause", json={"reason": "vendor outage"}, headers=headers())
    ).json()
    assert again["version"] == 2
    no_body = (await client.post(f"/schedules/{created['id']}/pause", headers=headers())).json()
    assert no_body["version"] == 2 and no_body["pausedReason"] == "vendor outage"
    new_reason = (
        await client.post(f"/schedules/{created['id']}/pause", json={"reason": "other"}, headers=headers())
    ).json()
    assert new_reason["version"] == 3 and new_reason["pausedAt"] == body["pausedAt"]
    resumed = await client.post(f"/schedules/{created['id']}/resume", headers=headers())
    assert resumed.status_code == 200
    r = resumed.json()
    assert r["status"] == "ACTIVE" and r["nextRunAt"] and r["pausedReason"] is None and r["pausedAt"] is None
    assert datetime.fromisoformat(r["nextRunAt"]) > datetime.now(UTC)
    assert (await client.post(f"/schedules/{created['id']}/resume", headers=headers())).json()["version"] == r[
        "version"
    ]


async def test_pause_via_patch_also_hides_next_run_and_records_who(client, headers, tenant):
    created = await create(client, headers, cron_body("patch-paused"))
    patched = (await client.patch(f"/schedules/{created['id']}", json={"enabled": False}, headers=headers())).json()
    assert patched["nextRunAt"] is None and patched["pausedBy"] == f"user-{tenant}" and patched["pausedReason"] is None
    listed = (await client.get("/schedules?status=PAUSED", headers=headers())).json()["items"]
    assert [s["id"] for s in listed] == [created["id"]] and listed[0]["nextRunAt"] is None
    created_paused = await create(client, headers, cron_body("born-paused", enabled=False))
    assert created_paused["nextRunAt"] is None and created_paused["status"] == "PAUSED"
    assert created_paused["pausedBy"] == f"user-{tenant}" and created_paused["pausedAt"] == created_paused["createdAt"]


async def test_pause_validation_roles_and_tenants(client, headers):
    created = await create(client, headers, cron_body("guarded"))
    sid = created["id"]
    assert_problem(await client.post(f"/schedules/{sid}/pause", json={"reason": 5}, headers=headers()), 400, "reason")
    assert_problem(await client.post(f"/schedules/{sid}/pause", json={"why": "x"}, headers=headers()), 400, "why")
    assert_problem(
        await client.post(f"/schedules/{sid}/pause", json={"reason": "x" * 1001}, headers=headers()), 400, "reason"
    )
    assert_problem(await client.post(f"/schedules/{sid}/pause", headers=headers(VIEWER)), 403)
    assert_problem(await client.post(f"/schedules/{sid}/pause", headers=other_tenant(headers)), 404)
    assert_problem(await client.post(f"/schedules/{sid}/resume", headers=other_tenant(headers)), 404)
    assert_problem(await client.post("/schedules/not-a-uuid/pause", headers=headers()), 400, "id")
    assert (await client.get(f"/schedules/{sid}", headers=headers())).json()["enabled"] is True


# --- create or update by name -----------------------------------------------------------------------------


def desired(**extra: object) -> dict[str, object]:
    body = cron_body(**extra)
    body.pop("name")
    return body


async def test_put_by_name_creates_then_updates_and_is_idempotent(client, headers):
    first = await client.put("/schedules/by-name/gitops-1", json=desired(), headers=headers())
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["name"] == "gitops-1" and created["version"] == 1 and created["webhookSecret"]
    assert first.headers["location"] == f"/schedules/{created['id']}" and first.headers["etag"] == '"1"'
    same = await client.put("/schedules/by-name/gitops-1", json=desired(), headers=headers())
    assert same.status_code == 200 and same.json()["version"] == 1 and same.json()["webhookSecret"] is None
    assert same.json()["nextRunAt"] == created["nextRunAt"]
    # The name in the body may be given when it matches.
    assert (await client.put("/schedules/by-name/gitops-1", json=cron_body("gitops-1"), headers=headers())).json()[
        "version"
    ] == 1
    changed = await client.put(
        "/schedules/by-name/gitops-1", json=desired(labels={"team": "a"}, payload={"x": 1}), headers=headers()
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.json()["labels"] == {"team": "a"}
    # A full replacement: fields left out go back to their defaults.
    reset = (await client.put("/schedules/by-name/gitops-1", json=desired(), headers=headers())).json()
    assert reset["version"] == 3 and reset["labels"] == {} and reset["payload"] is None
    history = (await client.get(f"/schedules/{created['id']}/history", headers=headers())).json()["items"]
    assert [e["action"] for e in history] == ["UPDATED", "UPDATED", "CREATED"]
    assert all(e["detail"] == {"via": "by-name"} for e in history)


async def test_put_by_name_is_idempotent_for_rrule_and_secret_headers(client, headers):
    body = {
        "tz": "UTC",
        "trigger": {"type": "RRULE", "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0"},
        "target": {
            "kind": "HTTP",
            "http": {"url": "https://example.com/hook", "secretHeaders": {"Authorization": "Bearer t0ken"}},
        },
    }
    first = (await client.put("/schedules/by-name/rrule-secret", json=body, headers=headers())).json()
    assert first["target"]["http"]["secretHeaders"] == {"Authorization": "********"}
    again = await client.put("/schedules/by-name/rrule-secret", json=body, headers=headers())
    assert again.status_code == 200 and again.json()["version"] == 1
    masked = {**body, "target": first["target"]}
    assert (await client.put("/schedules/by-name/rrule-secret", json=masked, headers=headers())).json()["version"] == 1
    new_secret = {
        **body,
        "target": {
            "kind": "HTTP",
            "http": {"url": "https://example.com/hook", "secretHeaders": {"Authorization": "x"}},
        },
    }
    assert (await client.put("/schedules/by-name/rrule-secret", json=new_secret, headers=headers())).json()[
        "version"
    ] == 2


async def test_put_by_name_preconditions_and_validation(client, headers):
    assert_problem(
        await client.put("/schedules/by-name/pc", json=desired(), headers={**headers(), "If-Match": '"1"'}), 412
    )
    created = await client.put("/schedules/by-name/pc", json=desired(), headers={**headers(), "If-None-Match": "*"})
    assert created.status_code == 201
    assert_problem(
        await client.put("/schedules/by-name/pc", json=desired(), headers={**headers(), "If-None-Match": "*"}), 412
    )
    stale = await client.put(
        "/schedules/by-name/pc", json=desired(description="d"), headers={**headers(), "If-Match": '"7"'}
    )
    assert_problem(stale, 412)
    stale_noop = await client.put("/schedules/by-name/pc", json=desired(), headers={**headers(), "If-Match": '"7"'})
    assert_problem(stale_noop, 412)
    ok = await client.put(
        "/schedules/by-name/pc", json=desired(description="d"), headers={**headers(), "If-Match": '"1"'}
    )
    assert ok.status_code == 200 and ok.json()["version"] == 2
    assert_problem(await client.put("/schedules/by-name/pc", json=cron_body("other"), headers=headers()), 400, "name")
    assert_problem(
        await client.put("/schedules/by-name/pc", json=desired(tenantId="elsewhere"), headers=headers()),
        400,
        "tenantId",
    )
    assert_problem(
        await client.put("/schedules/by-name/pc-new", json=desired(tenantId="elsewhere"), headers=headers()),
        400,
        "tenantId",
    )
    assert_problem(await client.put("/schedules/by-name/pc", json=[1], headers=headers()), 400, "body")
    assert_problem(await client.put("/schedules/by-name/pc", content=b"{", headers=headers()), 400, "body")
    bad = desired()
    bad["trigger"] = {"type": "CRON", "cron": "61 * * * *"}
    assert_problem(await client.put("/schedules/by-name/pc", json=bad, headers=headers()), 400, "trigger.cron")
    assert_problem(
        await client.put("/schedules/by-name/pc", json={**desired(), "bogus": 1}, headers=headers()), 400, "bogus"
    )
    assert_problem(
        await client.put("/schedules/by-name/pc", json=desired(), headers={**headers(), "If-None-Match": '"1"'}),
        400,
        "If-None-Match",
    )
    assert_problem(await client.put("/schedules/by-name/pc", json=desired(), headers=headers(VIEWER)), 403)
    assert_problem(await client.put("/schedules/by-name/p%01c", json=desired(), headers=headers()), 400, "name")


async def test_put_by_name_is_per_tenant(client, headers):
    mine = (await client.put("/schedules/by-name/shared-name", json=desired(), headers=headers())).json()
    theirs = await client.put("/schedules/by-name/shared-name", json=desired(), headers=other_tenant(headers))
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]
    assert (await client.get(f"/schedules/{mine['id']}", headers=headers())).json()["version"] == 1


# --- bulk changes by label --------------------------------------------------------------------------------


async def test_bulk_pause_resume_delete_by_labels(client, headers):
    ids = [
        (await create(client, headers, cron_body(f"b{i}", labels={"team": "x", "n": str(i % 2)})))["id"]
        for i in range(4)
    ]
    await create(client, headers, cron_body("other-team", labels={"team": "y"}))
    dry = await client.post("/schedules/bulk/pause", json={"labels": {"team": "x"}, "dryRun": True}, headers=headers())
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"action": "pause", "dryRun": True, "matched": 4, "changed": 4, "ids": ids}
    assert (await client.get(f"/schedules/{ids[0]}", headers=headers())).json()["enabled"] is True
    paused = (
        await client.post(
            "/schedules/bulk/pause", json={"labels": {"team": "x", "n": "0"}, "reason": "freeze"}, headers=headers()
        )
    ).json()
    assert paused["matched"] == 2 and paused["changed"] == 2 and paused["ids"] == [ids[0], ids[2]]
    again = (await client.post("/schedules/bulk/pause", json={"labels": {"team": "x"}}, headers=headers())).json()
    assert again["matched"] == 4 and again["changed"] == 2 and again["ids"] == [ids[1], ids[3]]
    one = (await client.get(f"/schedules/{ids[0]}", headers=headers())).json()
    assert one["pausedReason"] == "freeze" and one["nextRunAt"] is None
    history = (await client.get(f"/schedules/{ids[0]}/history", headers=headers())).json()["items"]
    assert history[0]["action"] == "PAUSED"
    assert history[0]["detail"] == {"via": "bulk", "selector": {"team": "x", "n": "0"}, "reason": "freeze"}
    resumed = (await client.post("/schedules/bulk/resume", json={"labels": {"team": "x"}}, headers=headers())).json()
    assert resumed["changed"] == 4
    listed = (await client.get("/schedules?label=team:x", headers=headers())).json()["items"]
    assert all(s["status"] == "ACTIVE" and s["nextRunAt"] for s in listed)
    deleted = (await client.post("/schedules/bulk/delete", json={"labels": {"team": "x"}}, headers=headers())).json()
    assert deleted["matched"] == 4 and deleted["changed"] == 4
    assert (await client.get("/schedules?label=team:x", headers=headers())).json()["total"] == 0
    assert (await client.get("/schedules?label=team:y", headers=headers())).json()["total"] == 1
    gone = (await client.get(f"/schedules/{ids[0]}/history", headers=headers())).json()["items"]
    assert gone[0]["action"] == "DELETED" and gone[0]["detail"]["via"] == "bulk"


async def test_bulk_is_bounded_validated_and_tenant_scoped(client, headers, settings):
    for i in range(3):
        await create(client, headers, cron_body(f"many{i}", labels={"wave": "1"}))
    small = dataclasses.replace(settings, bulk_max_schedules=2)
    async with AsyncTestClient(app=create_app(small)) as bounded:
        too_many = await bounded.post("/schedules/bulk/delete", json={"labels": {"wave": "1"}}, headers=headers())
        assert_problem(too_many, 400, "labels")
    assert (await client.get("/schedules?label=wave:1", headers=headers())).json()["total"] == 3
    assert_problem(await client.post("/schedules/bulk/pause", json={"labels": {}}, headers=headers()), 400, "labels")
    assert_problem(await client.post("/schedules/bulk/pause", json={}, headers=headers()), 400, "labels")
    assert_problem(
        await client.post("/schedules/bulk/resume", json={"labels": {"wave": "1"}, "reason": "x"}, headers=headers()),
        400,
        "reason",
    )
    assert_problem(
        await client.post("/schedules/bulk/pause", json={"labels": {"bad key!": "1"}}, headers=headers()), 400
    )
    assert_problem(
        await client.post("/schedules/bulk/pause", json={"labels": {"wave": "1"}}, headers=headers(VIEWER)), 403
    )
    elsewhere = await client.post(
        "/schedules/bulk/delete", json={"labels": {"wave": "1"}}, headers=other_tenant(headers)
    )
    assert elsewhere.status_code == 200 and elsewhere.json()["matched"] == 0
    assert (await client.get("/schedules?label=wave:1", headers=headers())).json()["total"] == 3


# --- filters, sorting and strict query parameters ---------------------------------------------------------


async def test_list_filters_by_status_target_kind_and_next_run(client, headers):
    now = datetime.now(UTC)
    soon = await create(
        client, headers, cron_body("f-soon", trigger={"type": "ONE_SHOT", "startAt": iso(now + timedelta(hours=1))})
    )
    later = await create(
        client,
        headers,
        cron_body(
            "f-later",
            trigger={"type": "ONE_SHOT", "startAt": iso(now + timedelta(days=3))},
            target={"kind": "QUEUE", "queue": {"topic": "jobs.x"}},
        ),
    )
    paused = await create(client, headers, cron_body("f-paused", enabled=False))

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/schedules?{query}", headers=headers(VIEWER))
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["items"]]

    assert await ids("status=ACTIVE") == [soon["id"], later["id"]]
    assert await ids("status=PAUSED") == [paused["id"]]
    assert await ids("status=PAUSED&status=ACTIVE") == [soon["id"], later["id"], paused["id"]]
    assert await ids("status=COMPLETED") == []
    assert await ids("targetKind=QUEUE") == [later["id"]]
    assert await ids("targetKind=EVENT&targetKind=HTTP") == [soon["id"], paused["id"]]
    before = iso(now + timedelta(days=1)).replace("+", "%2B")
    assert await ids(f"nextRunBefore={before}") == [soon["id"]]
    assert await ids(f"nextRunAfter={before}") == [later["id"]]
    assert await ids("sort=-nextRunAt") == [later["id"], soon["id"], paused["id"]]
    assert await ids("sort=nextRunAt") == [soon["id"], later["id"], paused["id"]]
    assert await ids("sort=-createdAt") == [paused["id"], later["id"], soon["id"]]
    assert await ids("sort=name") == [later["id"], paused["id"], soon["id"]]
    assert await ids("sort=-name&status=ACTIVE") == [soon["id"], later["id"]]
    page = (await client.get("/schedules?status=ACTIVE&pageSize=1&page=2", headers=headers())).json()
    assert page["total"] == 2 and [s["id"] for s in page["items"]] == [later["id"]]


async def test_unknown_query_parameters_and_values_are_400_naming_them(client, headers):
    created = await create(client, headers, cron_body("strict"))
    for query, field in [
        ("status=DONE", "status"),
        ("targetKind=SMS", "targetKind"),
        ("sort=id", "sort"),
        ("nextRunBefore=tomorrow", "nextRunBefore"),
        ("nextRunAfter=2026-01-01T00:00:00", "nextRunAfter"),
        ("stauts=PAUSED", "stauts"),
        ("page_size=5", "page_size"),
    ]:
        assert_problem(await client.get(f"/schedules?{query}", headers=headers()), 400, field)
    for path in (
        f"/schedules/{created['id']}?x=1",
        f"/schedules/{created['id']}/runs?state=FAILED",
        f"/schedules/{created['id']}/preview?count=2&explain=yes",
        f"/schedules/{created['id']}/history?limit=3",
    ):
        assert_problem(await client.get(path, headers=headers()), 400)
    assert_problem(
        await client.get(f"/schedules/{created['id']}/runs?status=COMPLETED", headers=headers()), 400, "status"
    )
    assert (await client.get(f"/schedules/{created['id']}/runs?status=FAILED", headers=headers())).status_code == 200
    assert_problem(await client.post(f"/schedules/{created['id']}/run?now=1", headers=headers()), 400, "now")


# --- cancel a run (the worker side is in test_run_cancel_delivery.py) -------------------------------------


async def test_cancel_a_queued_run_then_409(client, headers, db_url, tenant):
    created = await create(client, headers, cron_body("cancel-me"))
    run = (await client.post(f"/schedules/{created['id']}/run", headers=headers())).json()
    assert_problem(await client.post(f"/runs/{run['id']}/cancel", headers=headers(VIEWER)), 403)
    assert_problem(await client.post(f"/runs/{run['id']}/cancel", headers=other_tenant(headers)), 404)
    cancelled = await client.post(f"/runs/{run['id']}/cancel", headers=headers())
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED" and cancelled.json()["finishedAt"]
    assert f"cancelled by user-{tenant}" in cancelled.json()["error"]
    again = assert_problem(await client.post(f"/runs/{run['id']}/cancel", headers=headers()), 409)
    assert "CANCELLED" in again["detail"]
    assert_problem(await client.post(f"/runs/{uuid.uuid4()}/cancel", headers=headers()), 404)
    assert_problem(await client.post("/runs/nope/cancel", headers=headers()), 400, "runId")
    history = (await client.get(f"/schedules/{created['id']}/history", headers=headers())).json()["items"]
    assert history[0]["action"] == "RUN_CANCELLED" and history[0]["detail"]["runId"] == run["id"]
    # A run a worker is delivering right now (leased, PENDING) is not cancellable; neither is a finished one.
    leased = (await client.post(f"/schedules/{created['id']}/run", headers=headers())).json()
    done = (await client.post(f"/schedules/{created['id']}/run", headers=headers())).json()
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE runs SET lease_until = now() + interval '1 minute' WHERE id = %s", (leased["id"],))
        conn.execute("UPDATE runs SET status = 'SUCCEEDED' WHERE id = %s", (done["id"],))
    assert (
        "being delivered"
        in assert_problem(await client.post(f"/runs/{leased['id']}/cancel", headers=headers()), 409)["detail"]
    )
    assert (
        "SUCCEEDED" in assert_problem(await client.post(f"/runs/{done['id']}/cancel", headers=headers()), 409)["detail"]
    )


async def test_cancel_a_waiting_retry_and_rearm_a_parked_fixed_delay(client, headers, db_url):
    created = await create(client, headers, cron_body("parked", trigger={"type": "FIXED_DELAY", "delaySec": 3600}))
    run_id = str(uuid.uuid4())
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, attempt,"
            " next_attempt_at, lease_until) SELECT %s, id, tenant_id, now(), %s, 'RETRYING', 1,"
            " now() + interval '30 seconds', now() + interval '2 minutes' FROM schedules WHERE id = %s",
            (run_id, f"k-{run_id}", created["id"]),
        )
        conn.execute(
            "UPDATE schedules SET next_run_at = NULL, parked_run_id = %s WHERE id = %s", (run_id, created["id"])
        )
    cancelled = await client.post(f"/runs/{run_id}/cancel", headers=headers())
    assert cancelled.status_code == 200, cancelled.text
    schedule = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
    next_run = datetime.fromisoformat(schedule["nextRunAt"])
    assert timedelta(minutes=59) < next_run - datetime.now(UTC) <= timedelta(hours=1)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT parked_run_id FROM schedules WHERE id = %s", (created["id"],)).fetchone() == (None,)


# --- backfill and catch-up preview ------------------------------------------------------------------------


async def test_backfill_creates_the_runs_a_worker_would_have_with_their_keys(client, headers):
    created = await create(
        client, headers, cron_body("hourly", tz="UTC", trigger={"type": "CRON", "cron": "0 * * * *"})
    )
    sid = created["id"]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    body = {"from": iso(start), "to": iso(start + timedelta(hours=3))}
    dry = await client.post(f"/schedules/{sid}/backfill", json={**body, "dryRun": True}, headers=headers())
    assert dry.status_code == 200, dry.text
    d = dry.json()
    expected = [start + timedelta(hours=h) for h in range(4)]  # from and to are both included
    assert [datetime.fromisoformat(r["scheduledFor"]) for r in d["runs"]] == expected
    assert d["dryRun"] is True and d["created"] == 0 and {r["status"] for r in d["runs"]} == {"WOULD_CREATE"}
    for r, at in zip(d["runs"], expected, strict=True):
        key = idempotency_key(sid, at)
        assert r["idempotencyKey"] == key and r["runId"] == occurrence_run_id(key, at)
    assert (await client.get(f"/schedules/{sid}/runs", headers=headers())).json()["total"] == 0
    done = (await client.post(f"/schedules/{sid}/backfill", json=body, headers=headers())).json()
    assert done["created"] == 4 and done["existing"] == 0 and {r["status"] for r in done["runs"]} == {"CREATED"}
    runs = (await client.get(f"/schedules/{sid}/runs", headers=headers())).json()["items"]
    assert sorted(r["id"] for r in runs) == sorted(r["runId"] for r in d["runs"])
    assert all(r["status"] == "PENDING" and not r["manual"] for r in runs)
    # Overlapping range: what is recorded already is not recorded again.
    wider = {"from": iso(start + timedelta(hours=2)), "to": iso(start + timedelta(hours=4))}
    more = (await client.post(f"/schedules/{sid}/backfill", json=wider, headers=headers())).json()
    assert (more["created"], more["existing"]) == (1, 2)
    assert [r["status"] for r in more["runs"]] == ["EXISTS", "EXISTS", "CREATED"]
    history = (await client.get(f"/schedules/{sid}/history", headers=headers())).json()["items"]
    assert history[0]["action"] == "BACKFILLED" and history[0]["detail"]["created"] == 1
    # overlap: SKIP refuses while runs are open.
    skip = await client.post(f"/schedules/{sid}/backfill", json={**wider, "overlap": "SKIP"}, headers=headers())
    assert_problem(skip, 409)


async def test_backfill_validation_bounds_and_tenants(client, headers, settings):
    created = await create(client, headers, cron_body("bf", trigger={"type": "CRON", "cron": "* * * * *"}))
    sid = created["id"]
    now = datetime.now(UTC)
    url = f"/schedules/{sid}/backfill"
    past = {"from": iso(now - timedelta(hours=1)), "to": iso(now - timedelta(minutes=30))}
    assert_problem(await client.post(url, json={"to": past["to"]}, headers=headers()), 400, "from")
    assert_problem(
        await client.post(url, json={**past, "to": iso(now + timedelta(hours=1))}, headers=headers()), 400, "to"
    )
    assert_problem(await client.post(url, json={"from": past["to"], "to": past["from"]}, headers=headers()), 400, "to")
    assert_problem(await client.post(url, json={**past, "from": "2026-01-01T00:00:00"}, headers=headers()), 400, "from")
    assert_problem(await client.post(url, json={**past, "overlap": "MAYBE"}, headers=headers()), 400, "overlap")
    assert_problem(await client.post(url, json={**past, "dryrun": True}, headers=headers()), 400, "dryrun")
    assert_problem(await client.post(url, json=past, headers=headers(VIEWER)), 403)
    assert_problem(await client.post(url, json=past, headers=other_tenant(headers)), 404)
    small = dataclasses.replace(settings, backfill_max_runs=10)
    async with AsyncTestClient(app=create_app(small)) as bounded:
        assert_problem(await bounded.post(url, json=past, headers=headers()), 400, "to")
        ok = {"from": past["from"], "to": iso(now - timedelta(hours=1) + timedelta(minutes=5))}
        assert (await bounded.post(url, json={**ok, "dryRun": True}, headers=headers())).status_code == 200
    fixed = await create(client, headers, cron_body("fd", trigger={"type": "FIXED_DELAY", "delaySec": 60}))
    assert_problem(
        await client.post(f"/schedules/{fixed['id']}/backfill", json=past, headers=headers()), 400, "trigger"
    )
    paused = await create(client, headers, cron_body("bf-paused", enabled=False))
    assert_problem(await client.post(f"/schedules/{paused['id']}/backfill", json=past, headers=headers()), 409)


async def test_catchup_preview_follows_the_misfire_policy(client, headers):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    since = iso(now - timedelta(minutes=30)).replace("+", "%2B")
    for policy, count in (("FIRE_ONCE", None), ("SKIP", None), ("CATCH_UP", 5)):
        created = await create(
            client,
            headers,
            cron_body(
                f"cu-{policy}",
                tz="UTC",
                trigger={"type": "CRON", "cron": "*/5 * * * *"},
                misfirePolicy=policy,
                catchUpLimit=count or 100,
            ),
        )
        response = await client.get(
            f"/schedules/{created['id']}/catchup-preview?since={since}", headers=headers(VIEWER)
        )
        assert response.status_code == 200, response.text
        p = response.json()
        assert p["misfirePolicy"] == policy and p["missed"] >= 5
        replayed = [datetime.fromisoformat(r["scheduledFor"]) for r in p["runs"]]
        missed = [r for r in replayed if r < now - timedelta(seconds=60)]
        if policy == "FIRE_ONCE":
            assert len(missed) == 1 and missed[0] >= now - timedelta(minutes=30)
        elif policy == "SKIP":
            assert missed == [] and p["skipped"] == p["missed"]
        else:
            assert len(missed) == 5 and p["skipped"] == p["missed"] - 5
        for r in p["runs"]:
            at = datetime.fromisoformat(r["scheduledFor"])
            assert r["runId"] == occurrence_run_id(r["idempotencyKey"], at) and r["idempotencyKey"].startswith(
                created["id"]
            )
        assert datetime.fromisoformat(p["nextRunAt"]) > now - timedelta(seconds=1)
    url = f"/schedules/{created['id']}/catchup-preview"
    assert_problem(await client.get(url, headers=headers()), 400, "since")
    assert_problem(await client.get(f"{url}?since=yesterday", headers=headers()), 400, "since")
    assert_problem(await client.get(f"{url}?since=2999-01-01T00:00:00Z", headers=headers()), 400, "since")
    hypothetical = await client.get(
        f"{url}?since=2999-01-01T00:00:00Z&until=2999-01-01T01:00:00Z", headers=headers(VIEWER)
    )
    assert hypothetical.status_code == 200 and hypothetical.json()["missed"] == 12
    assert_problem(await client.get(f"{url}?since=2026-01-01T00:00:00", headers=headers()), 400, "since")
    assert_problem(await client.get(f"{url}?since={since}&until=2020-01-01T00:00:00Z", headers=headers()), 400, "until")
    assert_problem(await client.get(f"{url}?since={since}", headers=other_tenant(headers, VIEWER)), 404)


# --- concurrency, without the test client (which serves one request at a time) -----------------------------


async def test_concurrent_applies_of_a_new_name_create_it_once(settings, tenant):
    pool = make_pool(settings.postgres_url, min_size=4, max_size=8, name="it", role=settings.api_db_role)
    await pool.open(wait=True)
    try:
        # Room for every concurrent evaluation of one tenant (by default a tenant may hold a quarter of 16).
        roomy = dataclasses.replace(settings, trigger_eval_queue=64)
        service = ScheduleService(Repository(pool), roomy, lambda: datetime.now(UTC), key_ring(roomy))
        body = msgspec.json.decode(
            msgspec.json.encode({**cron_body("raced"), "labels": {"v": "1"}}), type=ScheduleCreate
        )
        results = await asyncio.gather(
            *(service.apply_by_name(tenant, "raced", body, None, False, f"actor-{i}") for i in range(8))
        )
        created = [s for s, was_created in results if was_created]
        assert len(created) == 1 and len({s.id for s, _ in results}) == 1
        assert {s.version for s, _ in results} == {1}  # the others found it equal: no new version
        history, total = await Repository(pool).schedule_history(tenant, created[0].id, 50, 0)
        assert total == 1 and history[0].action == "CREATED"
        # Concurrent bulk pauses of the same selector: each schedule is paused (and audited) once.
        bulk = [service.bulk(tenant, "pause", BulkRequest(labels={"v": "1"}), f"actor-{i}") for i in range(4)]
        answers = await asyncio.gather(*bulk)
        assert sorted(a.changed for a in answers) == [0, 0, 0, 1]
        _, total = await Repository(pool).schedule_history(tenant, created[0].id, 50, 0)
        assert total == 2
    finally:
        await pool.close()
