"""Lifecycle events against real Postgres, NATS and HTTP: from the outbox to a subscriber of the tenant's
namespace, with a real worker (whose relay drains the outbox) and the real API."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from aiohttp import web
from nats.aio.subscription import Subscription

from shared.settings import Settings
from shared.timing.jitter import idempotency_key, jitter_offset
from tests.integration.conftest import Headers, event_subject
from tests.integration.receivers import eventually
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio
FAST_RETRY = {"maxAttempts": 2, "backoffSec": 0.1, "maxBackoffSec": 0.2}


@pytest.fixture(scope="module")
async def worker(settings: Settings, nats_url: str) -> AsyncIterator[None]:
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=0.2)
    async with open_worker(config) as w:
        task = asyncio.create_task(w.run())
        yield
        w.request_stop()
        await asyncio.wait_for(task, 30)


def soon(seconds: float = 0.3) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


async def lifecycle(nc: nats.NATS, tenant: str) -> Subscription:
    return await nc.subscribe(event_subject(tenant, "scheduler.>"))


async def next_event(sub: Subscription, timeout: float = 10) -> tuple[str, dict[str, Any], Any]:
    msg = await sub.next_msg(timeout=timeout)
    return msg.subject, msgspec.json.decode(msg.data), msg.headers


async def create(client, headers: Headers, **body: Any) -> dict:
    body = {
        "name": f"s-{datetime.now(UTC).timestamp()}",
        "trigger": {"type": "ONE_SHOT", "startAt": later()},
        "target": {"kind": "EVENT", "eventTopic": "it.lifecycle"},
        "retry": FAST_RETRY,
        **body,
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 201, response.text
    return response.json()


async def test_api_changes_are_announced_in_order_with_actor_and_masked_secrets(client, headers, worker, nc, tenant):
    sub = await lifecycle(nc, tenant)
    target = {"kind": "HTTP", "http": {"url": "https://example.com/hook", "secretHeaders": {"X-Key": "s3cret"}}}
    created = await create(client, headers, target=target, labels={"team": "a"})
    sid = created["id"]

    subject, event, msg_headers = await next_event(sub)
    assert subject == f"tenants.{tenant}.scheduler.schedule.created"
    assert event["specversion"] == "1.0" and event["type"] == "scheduler.schedule.created"
    assert event["subject"] == sid and event["tenantid"] == tenant
    assert msg_headers["Nats-Msg-Id"] == event["id"]
    data = event["data"]
    assert data["scheduleId"] == sid and data["version"] == 1 and data["actor"] == f"user-{tenant}"
    assert data["schedule"]["name"] == created["name"] and data["schedule"]["labels"] == {"team": "a"}
    assert data["schedule"]["target"]["http"]["secretHeaders"] == {"X-Key": "********"}
    assert "webhookSecret" not in data["schedule"]
    raw = msgspec.json.encode(event).decode()
    assert "s3cret" not in raw and created["webhookSecret"] not in raw

    patched = await client.patch(f"/schedules/{sid}", json={"description": "d2"}, headers=headers())
    assert patched.status_code == 200
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.updated"
    assert event["data"]["version"] == 2 and event["data"]["schedule"]["description"] == "d2"

    await client.patch(f"/schedules/{sid}", json={"enabled": False}, headers=headers())
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.paused" and event["data"]["schedule"]["status"] == "PAUSED"
    await client.patch(f"/schedules/{sid}", json={"enabled": True}, headers=headers())
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.resumed"

    assert (await client.delete(f"/schedules/{sid}", headers=headers())).status_code == 204
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.deleted" and event["data"]["schedule"]["id"] == sid
    assert int(event["sequence"]) > 0


async def test_a_rolled_back_change_announces_nothing(client, headers, worker, nc, tenant, db_url):
    sub = await lifecycle(nc, tenant)
    created = await create(client, headers)
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.created"
    sid = created["id"]
    stale = await client.patch(f"/schedules/{sid}", json={"description": "x"}, headers={**headers(), "If-Match": '"7"'})
    assert stale.status_code == 412
    invalid = await client.patch(f"/schedules/{sid}", json={"tz": "Mars/Olympus"}, headers=headers())
    assert invalid.status_code == 400
    taken = await create(client, headers)
    _, event, _ = await next_event(sub)
    assert event["data"]["scheduleId"] == taken["id"]  # the next event is the next change that committed
    renamed = await client.patch(f"/schedules/{sid}", json={"name": taken["name"]}, headers=headers())
    assert renamed.status_code == 409  # the unique name: the update rolled back after its trigger ran
    await client.patch(f"/schedules/{sid}", json={"description": "kept"}, headers=headers())
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.updated" and event["data"]["version"] == 2
    assert event["data"]["schedule"]["description"] == "kept" and event["data"]["schedule"]["name"] != taken["name"]
    with pytest.raises(TimeoutError):
        await sub.next_msg(timeout=0.5)

    # A transaction that rolls back inside the database: its trigger wrote the row, the rollback took it away.
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE schedules SET description = 'rolled back', version = version + 1 WHERE id = %s", (sid,))
        inside = conn.execute("SELECT count(*) FROM schedule_events WHERE schedule_id = %s", (sid,)).fetchone()
        conn.rollback()
    assert inside is not None and inside[0] >= 1
    with pytest.raises(TimeoutError):
        await sub.next_msg(timeout=1.0)


async def test_a_one_shot_that_fired_is_exhausted(client, headers, worker, nc, tenant):
    sub = await lifecycle(nc, tenant)
    created = await create(client, headers, trigger={"type": "ONE_SHOT", "startAt": soon()})
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.created"
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.exhausted" and event["data"]["scheduleId"] == created["id"]
    assert event["data"]["schedule"]["status"] == "COMPLETED" and event["data"]["actor"] is None
    # Run successes are announced only when asked for (notify.runSucceeded).
    with pytest.raises(TimeoutError):
        await sub.next_msg(timeout=1.0)


async def test_run_succeeded_is_announced_when_asked_for(client, headers, worker, nc, tenant):
    sub = await lifecycle(nc, tenant)
    created = await create(
        client, headers, trigger={"type": "ONE_SHOT", "startAt": soon()}, notify={"runSucceeded": True}
    )
    assert created["notify"] == {"runSucceeded": True}
    types: list[str] = []
    while len(types) < 3:
        _, event, _ = await next_event(sub)
        types.append(event["type"])
        if event["type"] == "scheduler.run.succeeded":
            run = event["data"]["run"]
            assert run["status"] == "SUCCEEDED" and run["idempotencyKey"].startswith(created["id"])
    assert sorted(types) == sorted(
        ["scheduler.schedule.created", "scheduler.schedule.exhausted", "scheduler.run.succeeded"]
    )


async def test_failed_runs_are_announced_and_pause_the_schedule_on_failure(
    client, headers, worker, nc, tenant, receiver
):
    async def broken(n: int) -> web.Response:
        return web.Response(status=500, text="down")

    receiver.behave["/broken"] = broken
    sub = await lifecycle(nc, tenant)
    deadletters = await nc.subscribe(event_subject(tenant, "deadletter"))
    created = await create(
        client,
        headers,
        trigger={"type": "FIXED_DELAY", "delaySec": 1},
        target={"kind": "HTTP", "http": {"url": f"{receiver.url}/broken"}},
        pauseOnFailure=2,
    )
    assert created["pauseOnFailure"] == 2
    seen: list[dict] = []
    while not any(e["type"] == "scheduler.schedule.paused" for e in seen):
        _, event, _ = await next_event(sub, timeout=20)
        seen.append(event)
    types = [e["type"] for e in seen]
    assert types == [
        "scheduler.schedule.created",
        "scheduler.run.failed",
        "scheduler.run.failed",
        "scheduler.schedule.paused",
    ]
    failed = seen[1]["data"]["run"]
    assert failed["status"] == "FAILED" and failed["attempt"] == 2 and failed["httpStatus"] == 500
    paused = seen[3]["data"]
    assert paused["reason"].startswith("pauseOnFailure: 2 consecutive failed run(s)")
    assert paused["schedule"]["status"] == "PAUSED" and paused["schedule"]["pausedReason"] == paused["reason"]
    shown = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
    assert shown["status"] == "PAUSED" and shown["pausedReason"] == paused["reason"]
    assert shown["pausedBy"] == "scheduler"
    # The dead letter is still published, on its own subject, once per failed run.
    first = msgspec.json.decode((await deadletters.next_msg(timeout=5)).data)
    assert first["data"]["runId"] == failed["id"]

    # No run after the pause; resuming clears the reason and announces it.
    runs = (await client.get(f"/schedules/{created['id']}/runs", headers=headers())).json()["total"]
    await asyncio.sleep(1.5)
    assert (await client.get(f"/schedules/{created['id']}/runs", headers=headers())).json()["total"] == runs
    resumed = await client.patch(f"/schedules/{created['id']}", json={"enabled": True}, headers=headers())
    assert resumed.status_code == 200 and resumed.json().get("pausedReason") is None
    _, event, _ = await next_event(sub)
    assert event["type"] == "scheduler.schedule.resumed"


async def test_a_success_resets_the_failure_streak(client, headers, worker, nc, tenant, receiver):
    async def flaky(n: int) -> web.Response:
        return web.Response(status=200 if n % 2 == 0 else 500)

    receiver.behave["/flaky"] = flaky
    created = await create(
        client,
        headers,
        trigger={"type": "FIXED_DELAY", "delaySec": 1},
        target={"kind": "HTTP", "http": {"url": f"{receiver.url}/flaky"}},
        retry={"maxAttempts": 1, "backoffSec": 0.1, "maxBackoffSec": 0.1},
        pauseOnFailure=2,
    )

    async def four_runs() -> bool:
        page = (await client.get(f"/schedules/{created['id']}/runs", headers=headers())).json()
        return sum(r["status"] in ("SUCCEEDED", "FAILED") for r in page["items"]) >= 4

    await eventually(four_runs, 20)
    shown = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
    assert shown["status"] == "ACTIVE" and shown.get("pausedReason") is None
    await client.delete(f"/schedules/{created['id']}", headers=headers())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pauseOnFailure": 0}, "pauseOnFailure"),
        ({"jitterSec": -1}, "jitterSec"),
        ({"actionAfterCompletion": "ARCHIVE"}, "actionAfterCompletion"),
        ({"jitterSec": 86401}, "jitterSec"),
        ({"pauseOnFailure": 1001}, "pauseOnFailure"),
        ({"pauseOnFailure": "3"}, "pauseOnFailure"),
        ({"notify": {"runSucceeded": "yes"}}, "notify.runSucceeded"),
        ({"notify": {"runFailed": False}}, "notify.runFailed"),
    ],
)
async def test_bad_event_settings_are_a_problem_naming_the_field(client, headers, body, field):
    full = {
        "name": "bad",
        "trigger": {"type": "ONE_SHOT", "startAt": later()},
        "target": {"kind": "EVENT", "eventTopic": "x"},
        **body,
    }
    response = await client.post("/schedules", json=full, headers=headers())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert any(field in (e.get("field") or "") for e in problem.get("errors", [])) or field in problem["detail"]


async def test_a_fixed_delay_past_its_end_is_exhausted_when_its_last_run_finishes(client, headers, worker, nc, tenant):
    sub = await lifecycle(nc, tenant)
    end = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    created = await create(client, headers, trigger={"type": "FIXED_DELAY", "delaySec": 1, "endAt": end})
    types: list[str] = []
    while "scheduler.schedule.exhausted" not in types:
        _, event, _ = await next_event(sub, timeout=15)
        types.append(event["type"])
    assert types[0] == "scheduler.schedule.created" and types.count("scheduler.schedule.exhausted") == 1
    shown = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
    assert shown["status"] == "COMPLETED"


async def test_jitter_fires_at_the_nominal_time_plus_the_keys_offset(client, headers, worker):
    nominal = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    created = await create(client, headers, trigger={"type": "ONE_SHOT", "startAt": nominal.isoformat()}, jitterSec=4)
    sid = created["id"]
    offset = jitter_offset(idempotency_key(sid, nominal), 4)
    assert created["jitterSec"] == 4
    assert datetime.fromisoformat(created["nextRunAt"]) == nominal
    assert datetime.fromisoformat(created["nextDueAt"]) == nominal + offset
    preview = (await client.get(f"/schedules/{sid}/preview?count=1", headers=headers())).json()
    assert [datetime.fromisoformat(t) for t in preview["fireTimes"]] == [nominal]
    assert [datetime.fromisoformat(t) for t in preview["dueTimes"]] == [nominal + offset]

    runs: list[dict] = []

    async def fired() -> bool:
        nonlocal runs
        runs = (await client.get(f"/schedules/{sid}/runs", headers=headers())).json()["items"]
        return bool(runs) and runs[0]["status"] == "SUCCEEDED"

    await eventually(fired, 15)
    [run] = runs
    assert datetime.fromisoformat(run["scheduledFor"]) == nominal
    assert run["idempotencyKey"] == idempotency_key(sid, nominal)
    started = datetime.fromisoformat(run["startedAt"])
    # Not before its due time (the claim reads it), and not at the nominal time when the offset is noticeable.
    assert started >= nominal + offset
    assert started < nominal + offset + timedelta(seconds=5)


async def test_jitter_is_refused_where_it_cannot_apply(client, headers):
    body = {
        "name": "jittery",
        "trigger": {"type": "FIXED_DELAY", "delaySec": 5},
        "target": {"kind": "EVENT", "eventTopic": "x"},
        "jitterSec": 5,
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 400 and "jitterSec" in response.text


async def test_delete_after_completion_deletes_once_the_last_run_finished(
    client, headers, worker, nc, tenant, receiver
):
    async def slow(n: int) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(status=200)

    receiver.behave["/slow-last"] = slow
    sub = await lifecycle(nc, tenant)
    created = await create(
        client,
        headers,
        trigger={"type": "ONE_SHOT", "startAt": soon()},
        target={"kind": "HTTP", "http": {"url": f"{receiver.url}/slow-last"}},
        actionAfterCompletion="DELETE",
    )
    sid = created["id"]
    assert created["actionAfterCompletion"] == "DELETE"
    types: list[str] = []
    while "scheduler.schedule.deleted" not in types:
        _, event, _ = await next_event(sub, timeout=15)
        types.append(event["type"])
        if event["type"] == "scheduler.schedule.exhausted":
            # Completed, but its run is still in flight: the schedule is kept until it finishes.
            shown = await client.get(f"/schedules/{sid}", headers=headers())
            assert shown.status_code == 200 and shown.json()["status"] == "COMPLETED"
    assert types == ["scheduler.schedule.created", "scheduler.schedule.exhausted", "scheduler.schedule.deleted"]
    assert event["data"]["actor"] is None and event["data"]["schedule"]["status"] == "COMPLETED"
    assert (await client.get(f"/schedules/{sid}", headers=headers())).status_code == 404
    [delivered] = receiver.on("/slow-last")
    run_id = delivered.headers["X-Scheduler-Run-Id"]
    run = await client.get(f"/runs/{run_id}", headers=headers())
    assert run.status_code == 200 and run.json()["status"] == "SUCCEEDED"


async def test_keep_after_completion_is_the_default(client, headers, worker, nc, tenant):
    created = await create(client, headers, trigger={"type": "ONE_SHOT", "startAt": soon()})
    assert created["actionAfterCompletion"] == "KEEP"

    async def completed() -> bool:
        shown = await client.get(f"/schedules/{created['id']}", headers=headers())
        return shown.json()["status"] == "COMPLETED"

    await eventually(completed, 10)
    await asyncio.sleep(0.6)  # a few relay rounds
    assert (await client.get(f"/schedules/{created['id']}", headers=headers())).status_code == 200
