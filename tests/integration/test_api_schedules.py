"""The schedules API against a real Postgres: CRUD, pagination, tenants, concurrency and every error class."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from api.auth import VIEWER
from tests.integration.conftest import Headers

pytestmark = pytest.mark.asyncio


def cron_body(name: str = "Daily Report", **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "tz": "Europe/Berlin",
        "trigger": {"type": "CRON", "cron": "0 9 * * *"},
        "target": {"kind": "EVENT", "eventTopic": "reports.daily.generate"},
        "enabled": True,
        **extra,
    }


async def create(client, headers: Headers, body: dict[str, object] | None = None) -> dict:
    response = await client.post("/schedules", json=body or cron_body(), headers=headers())
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


async def test_create_returns_stored_schedule_with_location(client, headers, tenant):
    response = await client.post("/schedules", json=cron_body(tenantId=tenant), headers=headers())
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/schedules/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["tenantId"] == tenant and body["version"] == 1 and body["status"] == "ACTIVE"
    assert body["trigger"] == {"type": "CRON", "cron": "0 9 * * *"}
    assert body["misfirePolicy"] == "FIRE_ONCE" and body["labels"] == {} and body["payload"] is None
    next_run = datetime.fromisoformat(body["nextRunAt"])
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (9, 0)
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)

    fetched = await client.get(f"/schedules/{body['id']}", headers=headers(VIEWER))
    assert fetched.status_code == 200 and fetched.json() == {**body, "webhookSecret": None}


async def test_webhook_secret_is_shown_once_sealed_at_rest_and_rotatable(client, headers, db_url):
    created = await create(client, headers, cron_body("signed"))
    secret = created["webhookSecret"]
    assert secret.startswith("whsec_")
    fetched = (await client.get(f"/schedules/{created['id']}", headers=headers(VIEWER))).json()
    assert fetched["webhookSecret"] is None
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT webhook_secret FROM schedules WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None and secret not in row[0] and secret.removeprefix("whsec_") not in row[0]
    rotated = await client.post(f"/schedules/{created['id']}/secret:rotate", headers=headers())
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["webhookSecret"].startswith("whsec_") and rotated.json()["webhookSecret"] != secret
    assert rotated.json()["version"] == created["version"] + 1
    viewer = await client.post(f"/schedules/{created['id']}/secret:rotate", headers=headers(VIEWER))
    assert_problem(viewer, 403)


async def test_secret_headers_are_sealed_masked_and_kept(client, headers, db_url):
    target = {
        "kind": "HTTP",
        "http": {
            "url": "https://hooks.example.com/x",
            "headers": {"X-Plain": "p"},
            "secretHeaders": {"Authorization": "Bearer top-secret"},
        },
    }
    created = await create(client, headers, cron_body("secret-headers", target=target))
    assert created["target"]["http"]["secretHeaders"] == {"Authorization": "********"}
    assert created["target"]["http"]["headers"] == {"X-Plain": "p"}

    def stored() -> str:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT target::text FROM schedules WHERE id = %s", (created["id"],)).fetchone()
        assert row is not None
        return row[0]

    first = stored()
    assert "top-secret" not in first
    url = f"/schedules/{created['id']}"
    kept = await client.patch(url, json={"target": created["target"]}, headers=headers())  # masks sent back
    assert kept.status_code == 200, kept.text
    assert stored() == first
    changed = {"kind": "HTTP", "http": {**created["target"]["http"], "secretHeaders": {"Authorization": "new"}}}
    assert (await client.patch(url, json={"target": changed}, headers=headers())).status_code == 200
    assert stored() != first and "new" not in stored().split("Authorization")[1][:12]
    unknown = {"kind": "HTTP", "http": {**created["target"]["http"], "secretHeaders": {"X-Other": "********"}}}
    assert_problem(
        await client.patch(url, json={"target": unknown}, headers=headers()), 400, "target.http.secretHeaders.X-Other"
    )
    both = {
        "kind": "HTTP",
        "http": {"url": "https://hooks.example.com/x", "headers": {"X-A": "1"}, "secretHeaders": {"x-a": "2"}},
    }
    response = await client.post("/schedules", json=cron_body("dup-header", target=both), headers=headers())
    assert_problem(response, 400, "target.http.secretHeaders.x-a")


async def test_every_trigger_and_target_kind_round_trips(client, headers):
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    triggers = [
        {"type": "RRULE", "rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9"},
        {"type": "FIXED_DELAY", "delaySec": 3600},
        {"type": "ONE_SHOT", "startAt": start.isoformat()},
    ]
    targets = [
        {
            "kind": "HTTP",
            "http": {
                "url": "https://api.example.com/hook",
                "method": "POST",
                "headers": {"X-Team": "billing"},
                "timeoutSec": 5,
            },
        },
        {"kind": "QUEUE", "queue": {"topic": "jobs.reports"}},
        {"kind": "EVENT", "eventTopic": "a.b.c"},
    ]
    for i, (trigger, target) in enumerate(zip(triggers, targets, strict=True)):
        body = cron_body(f"kind-{i}", trigger=trigger, target=target, payload={"n": i}, labels={"team": "x"})
        created = await create(client, headers, body)
        assert created["target"]["kind"] == target["kind"] and created["payload"] == {"n": i}
        assert created["nextRunAt"] is not None
    one_shot = created
    assert datetime.fromisoformat(one_shot["nextRunAt"]) == start


async def test_rrule_without_start_is_anchored_at_creation(client, headers):
    created = await create(client, headers, cron_body(trigger={"type": "RRULE", "rrule": "FREQ=DAILY;BYHOUR=6"}))
    assert created["trigger"]["startAt"] is not None
    local = datetime.fromisoformat(created["nextRunAt"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.second) == (6, 0, 0)


async def test_one_shot_in_the_past_is_due_at_once(client, headers):
    past = datetime.now(UTC) - timedelta(hours=3)
    created = await create(client, headers, cron_body(trigger={"type": "ONE_SHOT", "startAt": past.isoformat()}))
    assert datetime.fromisoformat(created["nextRunAt"]) == past.replace(microsecond=past.microsecond)


async def test_duplicate_name_is_409_naming_it(client, headers):
    await create(client, headers, cron_body("dup"))
    response = await client.post("/schedules", json=cron_body("dup"), headers=headers())
    body = assert_problem(response, 409, "name")
    assert body["detail"] == "a schedule named 'dup' already exists"
    other = await create(client, headers, cron_body("other"))
    renamed = await client.patch(f"/schedules/{other['id']}", json={"name": "dup"}, headers=headers())
    assert assert_problem(renamed, 409, "name")["detail"] == "a schedule named 'dup' already exists"


async def test_pagination_is_stable_and_counts(client, headers):
    names = [f"p{i}" for i in range(5)]
    for n in names:
        await create(client, headers, cron_body(n))
    seen = []
    for page in (1, 2, 3):
        response = await client.get(f"/schedules?page={page}&pageSize=2", headers=headers(VIEWER))
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == 5 and body["page"] == page and body["pageSize"] == 2
        seen += [s["name"] for s in body["items"]]
    assert seen == names
    default = (await client.get("/schedules", headers=headers(VIEWER))).json()
    assert default["pageSize"] == 20 and len(default["items"]) == 5


async def test_list_filters(client, headers, tenant):
    await create(client, headers, cron_body("report-a", labels={"team": "billing", "env": "prod"}))
    await create(client, headers, cron_body("report-b", enabled=False, labels={"team": "billing"}))
    await create(client, headers, cron_body("other_%", labels={"team": "ops"}))

    async def names(query: str) -> list[str]:
        response = await client.get(f"/schedules?{query}", headers=headers(VIEWER))
        assert response.status_code == 200, response.text
        return [s["name"] for s in response.json()["items"]]

    assert await names("name=report") == ["report-a", "report-b"]
    assert await names("name=other_") == ["other_%"]
    assert await names("name=%25") == []  # LIKE wildcards are matched literally
    assert await names("enabled=false") == ["report-b"]
    assert await names("label=team:billing") == ["report-a", "report-b"]
    assert await names("label=team:billing&label=env:prod") == ["report-a"]
    assert await names(f"tenantId={tenant}&enabled=true&name=report") == ["report-a"]


async def test_tenants_are_separated(client, headers, tenant):
    mine = await create(client, headers)
    other = "other-" + tenant
    response = await client.get(f"/schedules/{mine['id']}", headers=headers(tenant_id=other))
    assert_problem(response, 404)
    for method in ("patch", "delete"):
        kwargs = {"json": {"enabled": False}} if method == "patch" else {}
        response = await getattr(client, method)(f"/schedules/{mine['id']}", headers=headers(tenant_id=other), **kwargs)
        assert_problem(response, 404)
    listed = (await client.get("/schedules", headers=headers(VIEWER, tenant_id=other))).json()
    assert listed["total"] == 0
    # A token for one tenant cannot name another in X-Tenant-Id.
    forged = headers(tenant_id=tenant, tenants=[other])
    assert_problem(await client.get("/schedules", headers=forged), 403)
    # The same name is free in another tenant.
    await client.post("/schedules", json=cron_body(), headers=headers(tenant_id=other))


async def test_body_or_query_tenant_must_match_header(client, headers, tenant):
    response = await client.post("/schedules", json=cron_body(tenantId="someone-else"), headers=headers())
    assert_problem(response, 400, "tenantId")
    response = await client.get("/schedules?tenantId=someone-else", headers=headers())
    assert_problem(response, 400, "tenantId")


async def test_patch_with_optimistic_concurrency(client, headers):
    created = await create(client, headers)
    url = f"/schedules/{created['id']}"
    response = await client.patch(url, json={"description": "v2"}, headers={**headers(), "If-Match": '"1"'})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2 and response.headers["etag"] == '"2"'
    stale = await client.patch(url, json={"description": "v3"}, headers={**headers(), "If-Match": '"1"'})
    assert_problem(stale, 412)
    stale_body = await client.patch(url, json={"description": "v3", "version": 1}, headers=headers())
    assert_problem(stale_body, 412)
    ok = await client.patch(url, json={"description": "v3", "version": 2}, headers=headers())
    assert ok.status_code == 200 and ok.json()["description"] == "v3"
    stored = (await client.get(url, headers=headers())).json()
    assert stored["version"] == 3 and stored["name"] == created["name"]


async def test_patch_recomputes_next_run(client, headers):
    created = await create(client, headers)
    url = f"/schedules/{created['id']}"
    response = await client.patch(url, json={"tz": "America/New_York"}, headers=headers())
    moved = datetime.fromisoformat(response.json()["nextRunAt"]).astimezone(ZoneInfo("America/New_York"))
    assert (moved.hour, moved.minute) == (9, 0)

    response = await client.patch(url, json={"trigger": {"type": "CRON", "cron": "15 * * * *"}}, headers=headers())
    assert datetime.fromisoformat(response.json()["nextRunAt"]).minute == 15

    paused = await client.patch(url, json={"enabled": False}, headers=headers())
    assert paused.json()["status"] == "PAUSED"
    resumed = await client.patch(url, json={"enabled": True}, headers=headers())
    assert resumed.json()["status"] == "ACTIVE"
    assert datetime.fromisoformat(resumed.json()["nextRunAt"]) > datetime.now(UTC)


async def test_patch_validates_the_merged_schedule(client, headers):
    created = await create(client, headers)
    url = f"/schedules/{created['id']}"
    assert_problem(
        await client.patch(url, json={"trigger": {"type": "CRON", "cron": "61 * * * *"}}, headers=headers()),
        400,
        "trigger.cron",
    )
    assert_problem(await client.patch(url, json={"bogus": 1}, headers=headers()), 400, "bogus")
    assert_problem(await client.patch(url, json={"tenantId": "x"}, headers=headers()), 400, "tenantId")
    assert (await client.get(url, headers=headers())).json() == {**created, "webhookSecret": None}  # nothing stored


async def test_delete(client, headers):
    created = await create(client, headers)
    url = f"/schedules/{created['id']}"
    assert (await client.delete(url, headers=headers())).status_code == 204
    assert_problem(await client.get(url, headers=headers()), 404)
    assert_problem(await client.delete(url, headers=headers()), 404)


async def test_previews(client, headers):
    created = await create(client, headers)
    response = await client.get(f"/schedules/{created['id']}/preview?count=5", headers=headers(VIEWER))
    times = [datetime.fromisoformat(t) for t in response.json()["fireTimes"]]
    assert len(times) == 5 and times[0] == datetime.fromisoformat(created["nextRunAt"])
    assert all(
        b - a == timedelta(days=1) or b - a in (timedelta(hours=23), timedelta(hours=25))
        for a, b in itertools.pairwise(times)
    )

    body = {
        "tz": "Europe/Berlin",
        "trigger": {"type": "CRON", "cron": "30 2 * * *"},
        "after": "2026-03-28T12:00:00Z",
        "count": 3,
    }
    response = await client.post("/triggers/preview", json=body, headers=headers(VIEWER))
    assert response.status_code == 200, response.text
    assert response.json() == {"fireTimes": ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]}
    assert_problem(
        await client.post("/triggers/preview", json={**body, "count": 1001}, headers=headers()), 400, "count"
    )
    assert_problem(await client.get(f"/schedules/{created['id']}/preview?count=0", headers=headers()), 400, "count")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trigger": {"type": "CRON", "cron": "0 9 * *"}}, "trigger.cron"),
        ({"trigger": {"type": "CRON", "cron": "0 0 30 2 *"}}, "trigger.cron"),
        ({"trigger": {"type": "RRULE", "rrule": "FREQ=SOMETIMES"}}, "trigger.rrule"),
        ({"trigger": {"type": "FIXED_DELAY", "delaySec": 0}}, "trigger.delaySec"),
        ({"trigger": {"type": "FIXED_DELAY", "delaySec": "10"}}, "trigger.delaySec"),
        ({"trigger": {"type": "ONE_SHOT", "startAt": "2026-01-01T09:00:00"}}, "trigger.startAt"),
        ({"trigger": {"type": "ONE_SHOT", "startAt": "tomorrow"}}, "trigger.startAt"),
        ({"trigger": {"type": "ONE_SHOT"}}, "trigger.startAt"),
        (
            {
                "trigger": {
                    "type": "CRON",
                    "cron": "* * * * *",
                    "startAt": "2027-01-02T00:00:00Z",
                    "endAt": "2027-01-01T00:00:00Z",
                }
            },
            "trigger.endAt",
        ),
        ({"trigger": {"type": "WHENEVER"}}, "trigger.type"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"target": {"kind": "HTTP", "http": {"url": "ftp://example.com/x"}}}, "target.http.url"),
        (
            {"target": {"kind": "HTTP", "http": {"url": "https://e.com", "headers": {"Bad Name": "v"}}}},
            "target.http.headers.Bad Name",
        ),
        (
            {"target": {"kind": "HTTP", "http": {"url": "https://e.com", "headers": {"X-A": "a\r\nb"}}}},
            "target.http.headers.X-A",
        ),
        ({"target": {"kind": "HTTP", "http": {"url": "https://e.com", "timeoutSec": 301}}}, "target.http.timeoutSec"),
        ({"target": {"kind": "EVENT", "eventTopic": "a..b"}}, "target.eventTopic"),
        ({"target": {"kind": "EVENT", "eventTopic": "a.*"}}, "target.eventTopic"),
        ({"target": {"kind": "QUEUE", "queue": {"topic": "has space"}}}, "target.queue.topic"),
        ({"misfirePolicy": "SOMETIMES"}, "misfirePolicy"),
        ({"catchUpLimit": 0}, "catchUpLimit"),
        ({"labels": {"bad key!": "v"}}, "labels.bad key!"),
        ({"payload": {"blob": "x" * (256 * 1024)}}, "payload"),
        ({"unexpected": True}, "unexpected"),
        ({"payload": {"text": "nul\u0000byte"}}, "payload"),
        ({"target": {"kind": "HTTP", "http": {"url": "http://169.254.169.254/latest/meta-data"}}}, "target.http.url"),
        ({"target": {"kind": "HTTP", "http": {"url": "http://10.0.0.5:8080/hook"}}}, "target.http.url"),
        ({"target": {"kind": "HTTP", "http": {"url": "http://[::ffff:192.168.0.1]/hook"}}}, "target.http.url"),
        ({"target": {"kind": "HTTP", "http": {"url": "http://0.0.0.0/hook"}}}, "target.http.url"),
        ({"description": "nul\u0000byte"}, "description"),
        ({"target": {"kind": "EVENT", "eventTopic": "a.\u0000b"}}, "target.eventTopic"),
        ({"target": {"kind": "HTTP", "http": {"url": "https://e.com", "body": {"x": "\u0000"}}}}, "target.http.body"),
        ({"trigger": {"type": "ONE_SHOT", "startAt": "0001-01-01T00:00:00+01:00"}}, "trigger.startAt"),
        ({"trigger": {"type": "CRON", "cron": "* * * * *", "endAt": "9999-12-31T23:59:59Z"}}, "trigger.endAt"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
async def test_invalid_bodies_name_the_field(client, headers, change, field):
    response = await client.post("/schedules", json={**cron_body(), **change}, headers=headers())
    assert_problem(response, 400, field)


async def test_loopback_targets_are_allowed_in_dev_mode_and_patches_are_checked(client, headers):
    local = cron_body("local", target={"kind": "HTTP", "http": {"url": "http://localhost:9/hook"}})
    created = await create(client, headers, local)
    internal = {"target": {"kind": "HTTP", "http": {"url": "http://192.168.1.10/hook"}}}
    response = await client.patch(f"/schedules/{created['id']}", json=internal, headers=headers())
    body = assert_problem(response, 400, "target.http.url")
    assert "private address" in body["detail"]


async def test_malformed_requests_are_4xx(client, headers, settings):
    h = {**headers(), "Content-Type": "application/json"}
    assert_problem(await client.post("/schedules", content=b"{not json", headers=h), 400)
    assert_problem(await client.post("/schedules", content=b"[]", headers=h), 400)
    assert_problem(await client.post("/schedules", content=b"", headers=h), 400)
    big = b'{"name": "' + b"x" * (settings.max_body_bytes + 1) + b'"}'
    assert_problem(await client.post("/schedules", content=big, headers=h), 413)
    assert_problem(await client.get("/schedules/not-a-uuid", headers=h), 400, "id")
    for query in (
        "page=0",
        "pageSize=0",
        "pageSize=201",
        "page=abc",
        "enabled=maybe",
        "label=nocolon",
        "name=a%00b",
        "label=k:%00",
    ):
        response = await client.get(f"/schedules?{query}", headers=h)
        assert_problem(response, 400)
    response = await client.patch(
        f"/schedules/{'0' * 8}-0000-0000-0000-{'0' * 12}", json={}, headers={**h, "If-Match": "yesterday"}
    )
    assert_problem(response, 400, "If-Match")


async def test_tenant_header_and_auth_are_required(client, headers):
    h = headers()
    no_tenant = {"Authorization": h["Authorization"]}
    assert_problem(await client.get("/schedules", headers=no_tenant), 400, "X-Tenant-Id")
    assert_problem(await client.get("/schedules", headers={**h, "X-Tenant-Id": "bad tenant"}), 400, "X-Tenant-Id")
    unauthenticated = await client.get("/schedules", headers={"X-Tenant-Id": h["X-Tenant-Id"]})
    assert_problem(unauthenticated, 401)
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    garbage = await client.get("/schedules", headers={**h, "Authorization": "Bearer not.a.jwt"})
    assert_problem(garbage, 401)
    viewer_write = await client.post("/schedules", json=cron_body(), headers=headers(VIEWER))
    assert_problem(viewer_write, 403)


async def test_health_endpoints_need_no_token(client):
    assert (await client.get("/live")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"status": "ok", "database": "ok"}
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and health["components"]["database"]["status"] == "ok"
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/schedules" in schema.json()["paths"]


async def test_metrics_count_requests_by_route_template(client, headers):
    created = await create(client, headers, cron_body("metered"))
    await client.get(f"/schedules/{created['id']}", headers=headers(VIEWER))
    text = (await client.get("/metrics")).text
    assert (
        'scheduler_api_request_duration_seconds_count{method="GET",route="/schedules/{schedule_id}",status="200"}'
        in text
    )
    assert created["id"] not in text  # ids never become label values
