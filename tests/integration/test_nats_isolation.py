"""Tenant isolation on NATS, against a real server: the observed cross-tenant attacks, topic validation, QUEUE
streams made with the schedule, and failure notices that follow their committed record."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import nats
import nats.js.errors
import psycopg
import pytest
from aiohttp import web
from litestar.testing import AsyncTestClient
from nats.js.api import DiscardPolicy

from api.app import create_app
from shared.settings import Settings
from tests.integration.conftest import EDITOR, NAMESPACE, Headers, event_subject
from tests.integration.receivers import eventually
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio
FAST_RETRY = {"maxAttempts": 2, "backoffSec": 0.2, "maxBackoffSec": 1}


@pytest.fixture(scope="module")
async def worker(settings: Settings) -> AsyncIterator[None]:
    config = dataclasses.replace(settings, worker_poll_max_sec=0.2, worker_batch_size=50)
    async with open_worker(config) as w:
        task = asyncio.create_task(w.run())
        yield
        w.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def other() -> str:
    return f"o-{uuid.uuid4().hex[:10]}"


def soon(seconds: float = 0.3) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


async def create(client, headers: Headers, target: dict, tenant: str | None = None, start: str | None = None):
    body = {
        "name": f"s-{uuid.uuid4().hex[:6]}",
        "trigger": {"type": "ONE_SHOT", "startAt": start or soon()},
        "target": target,
        "retry": FAST_RETRY,
    }
    return await client.post("/schedules", json=body, headers=headers(EDITOR, tenant))


async def settled(client, headers: Headers, schedule_id: str, tenant: str | None = None) -> dict:
    runs: list[dict] = []

    async def check() -> bool:
        nonlocal runs
        response = await client.get(f"/schedules/{schedule_id}/runs", headers=headers(EDITOR, tenant))
        runs = response.json()["items"]
        return any(r["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") for r in runs)

    await eventually(check, 15)
    return runs[0]


async def messages(nc: nats.NATS, stream: str) -> int:
    """Messages in ``stream`` other than the scheduler's lifecycle events (``<prefix>scheduler.…``), which a
    tenant's event stream keeps too."""
    info = await nc.jsm().stream_info(stream, subjects_filter=">")
    subjects = info.state.subjects or {}
    lifecycle = sum(n for s, n in subjects.items() if s.startswith("tenants.") and s.split(".")[2:3] == ["scheduler"])
    return info.state.messages - lifecycle


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "*",
        "a.>",
        "$JS.API.STREAM.DELETE.x",
        "$SYS.REQ.SERVER.PING",
        "_INBOX.x",
        "a..b",
        ".a",
        "a.",
        "a b",
        "a\u0001b",
        "deadletter",
        "scheduler.deadletter",
        "tenants.t2.reports",
        "queues.t2.jobs",
        "",
    ],
)
async def test_topics_that_could_escape_the_namespace_are_400_naming_the_field(client, headers, topic):
    for target, field in (
        ({"kind": "EVENT", "eventTopic": topic}, "target.eventTopic"),
        ({"kind": "QUEUE", "queue": {"topic": topic}}, "target.queue.topic"),
    ):
        response = await create(client, headers, target)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in {e["field"] for e in response.json()["errors"]}, response.json()


async def test_a_bad_topic_in_an_update_is_400_and_makes_no_stream(client, headers, nc, tenant):
    created = await create(client, headers, {"kind": "EVENT", "eventTopic": "ok"}, start=later())
    assert created.status_code == 201
    patched = await client.patch(
        f"/schedules/{created.json()['id']}",
        json={"target": {"kind": "QUEUE", "queue": {"topic": "a.*"}}},
        headers=headers(),
    )
    assert patched.status_code == 400 and patched.json()["errors"][0]["field"] == "target.queue.topic"
    with pytest.raises(nats.js.errors.NotFoundError):
        await nc.jsm().find_stream_name_by_subject(f"queues.{tenant}.a.x")


# --- the three observed attacks ----------------------------------------------------------------------------


async def test_an_event_on_another_tenants_queue_topic_does_not_reach_its_queue(
    client, headers, worker, nc, tenant, other
):
    queue = await create(client, headers, {"kind": "QUEUE", "queue": {"topic": "jobs"}}, tenant=other, start=later())
    assert queue.status_code == 201
    victim_stream = NAMESPACE.queue_stream(other, "jobs")
    # The attacker names the victim's queue: relative (lands in its own namespace) or absolute (refused).
    attack = await create(client, headers, {"kind": "EVENT", "eventTopic": "jobs"})
    assert attack.status_code == 201
    absolute = await create(client, headers, {"kind": "EVENT", "eventTopic": f"queues.{other}.jobs"})
    assert absolute.status_code == 400
    run = await settled(client, headers, attack.json()["id"])
    assert run["status"] == "SUCCEEDED" and run["delivery"]["subject"] == f"tenants.{tenant}.jobs"
    assert await messages(nc, victim_stream) == 0


async def test_a_queue_on_another_tenants_event_topic_captures_nothing(client, headers, worker, nc, tenant, other):
    watcher = await nc.subscribe(event_subject(other, "reports.daily"))
    trap = await create(client, headers, {"kind": "QUEUE", "queue": {"topic": "reports.daily"}}, start=later())
    assert trap.status_code == 201
    assert (
        await create(client, headers, {"kind": "QUEUE", "queue": {"topic": f"tenants.{other}.reports.daily"}})
    ).status_code == 400
    event = await create(client, headers, {"kind": "EVENT", "eventTopic": "reports.daily"}, tenant=other)
    assert event.status_code == 201
    run = await settled(client, headers, event.json()["id"], tenant=other)
    assert run["status"] == "SUCCEEDED"
    msg = await watcher.next_msg(timeout=5)
    assert msgspec.json.decode(msg.data)["tenantid"] == other
    assert await messages(nc, NAMESPACE.queue_stream(tenant, "reports.daily")) == 0
    assert await messages(nc, NAMESPACE.event_stream(other)) == 1  # the victim's own stream has it


async def test_no_tenant_can_capture_another_tenants_dead_letters(
    client, headers, worker, nc, receiver, tenant, other, db_url
):
    for topic in ("scheduler.deadletter", "deadletter"):
        refused = await create(client, headers, {"kind": "QUEUE", "queue": {"topic": topic}})
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "target.queue.topic"
    # A topic stored before the rules existed still publishes only inside its tenant's namespace.
    legacy = await create(client, headers, {"kind": "QUEUE", "queue": {"topic": "legacy"}}, start=later())
    stored = '{"kind": "QUEUE", "queue": {"topic": "scheduler.deadletter"}}'
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE schedules SET target = %s, next_run_at = now() WHERE id = %s", (stored, legacy.json()["id"])
        )
    legacy_run = await settled(client, headers, legacy.json()["id"])
    assert legacy_run["delivery"]["subject"] == f"queues.{tenant}.scheduler.deadletter"
    # Such a schedule can still be changed; only a new target must follow the rules.
    path = f"/schedules/{legacy.json()['id']}"
    assert (await client.patch(path, json={"name": "kept"}, headers=headers())).status_code == 200
    again = {"target": {"kind": "QUEUE", "queue": {"topic": "scheduler.deadletter"}}}
    assert (await client.patch(path, json=again, headers=headers())).status_code == 400

    async def refuse(n: int) -> web.Response:
        return web.Response(status=400)

    receiver.behave["/refuse"] = refuse
    own = await nc.subscribe(f"tenants.{other}.deadletter")
    failing = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/refuse"}}, tenant=other)
    run = await settled(client, headers, failing.json()["id"], tenant=other)
    assert run["status"] == "FAILED"
    letter = msgspec.json.decode((await own.next_msg(timeout=5)).data)
    assert letter["data"]["runId"] == run["id"]
    # The attacker's stream on that topic holds its own message only, not the victim's letter.
    trap = NAMESPACE.queue_stream(tenant, "scheduler.deadletter")
    assert await messages(nc, trap) == 1
    stored_msg = await nc.jetstream().get_last_msg(trap, f"queues.{tenant}.scheduler.deadletter")
    assert msgspec.json.decode(stored_msg.data)["tenantid"] == tenant


# --- QUEUE streams are made with the schedule --------------------------------------------------------------


async def test_a_queue_stream_exists_as_soon_as_the_schedule_is_created(client, headers, nc, tenant, settings):
    created = await create(client, headers, {"kind": "QUEUE", "queue": {"topic": "work.items"}}, start=later())
    assert created.status_code == 201
    # A consumer started right after the 201 (no worker has fired anything) finds its stream.
    stream = NAMESPACE.queue_stream(tenant, "work.items")
    info = await nc.jsm().stream_info(stream)
    assert info.config.subjects == [f"queues.{tenant}.work.items"]
    assert info.config.retention == "workqueue" and info.config.discard == "new"
    assert info.config.max_msgs == settings.nats_queue_max_msgs
    assert info.config.max_age == settings.nats_queue_max_age_sec
    consumer = await nc.jetstream().pull_subscribe(f"queues.{tenant}.work.items", durable="c1", stream=stream)
    with pytest.raises(nats.errors.TimeoutError):
        await consumer.fetch(1, timeout=0.3)
    # Changing the topic makes the new stream before answering too.
    patched = await client.patch(
        f"/schedules/{created.json()['id']}",
        json={"target": {"kind": "QUEUE", "queue": {"topic": "work.other"}}},
        headers=headers(),
    )
    assert patched.status_code == 200
    assert (await nc.jsm().stream_info(NAMESPACE.queue_stream(tenant, "work.other"))).config.name


async def test_the_api_answers_503_and_stores_nothing_when_nats_is_away(settings: Settings, headers):
    away = dataclasses.replace(settings, nats_url="nats://127.0.0.1:1")
    async with AsyncTestClient(app=create_app(away)) as client:
        response = await create(client, headers, {"kind": "QUEUE", "queue": {"topic": "jobs"}})
        assert response.status_code == 503, response.text
        listed = await client.get("/schedules", headers=headers())
        assert listed.json()["total"] == 0
        # Other targets do not need NATS at the API.
        assert (await create(client, headers, {"kind": "EVENT", "eventTopic": "x"}, start=later())).status_code == 201


async def test_event_streams_carry_the_configured_limits(client, headers, worker, nc, tenant, settings):
    created = await create(client, headers, {"kind": "EVENT", "eventTopic": "limits"})
    await settled(client, headers, created.json()["id"])
    info = await nc.jsm().stream_info(NAMESPACE.event_stream(tenant))
    assert info.config.subjects == [f"tenants.{tenant}.>"]
    assert info.config.max_msgs == settings.nats_event_max_msgs
    assert info.config.max_age == settings.nats_event_max_age_sec
    assert info.config.duplicate_window == 120


# --- notices follow their record --------------------------------------------------------------------------


async def test_a_failure_notice_arrives_only_after_the_failed_status_is_committed(
    client, headers, worker, nc, receiver, tenant, db_url
):
    async def down(n: int) -> web.Response:
        return web.Response(status=503)

    receiver.behave["/down-notice"] = down
    seen: list[tuple[str, str | None]] = []

    async def on_letter(msg) -> None:  # type: ignore[no-untyped-def]
        run_id = msgspec.json.decode(msg.data)["data"]["runId"]
        # What a reader of the database sees at the moment the notice arrives.
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            row = await (await conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,))).fetchone()
        seen.append((run_id, row[0] if row else None))

    await nc.subscribe(f"tenants.{tenant}.deadletter", cb=on_letter)
    ids = []
    for _ in range(4):
        created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/down-notice"}})
        ids.append(created.json()["id"])
    await eventually(lambda: len(seen) >= 4, timeout=20)
    assert [status for _, status in seen] == ["FAILED"] * 4, seen


# --- durable publishing recovers -------------------------------------------------------------------------


async def test_an_event_stream_deleted_behind_the_workers_back_is_made_again(client, headers, worker, nc, tenant):
    first = await create(client, headers, {"kind": "EVENT", "eventTopic": "again"})
    assert (await settled(client, headers, first.json()["id"]))["status"] == "SUCCEEDED"
    await nc.jsm().delete_stream(NAMESPACE.event_stream(tenant))
    second = await create(client, headers, {"kind": "EVENT", "eventTopic": "again"})
    run = await settled(client, headers, second.json()["id"])
    assert run["status"] == "SUCCEEDED" and run["delivery"]["via"] == "jetstream", run
    assert run["attempt"] <= 2  # the failed attempt found the stream gone; the next one made it again
    assert await messages(nc, NAMESPACE.event_stream(tenant)) == 1


async def test_a_full_queue_refuses_new_work_and_the_run_is_dead_lettered(client, headers, worker, nc, tenant):
    created = [
        await create(client, headers, {"kind": "QUEUE", "queue": {"topic": "full"}}, start=later()) for _ in range(2)
    ]
    stream = NAMESPACE.queue_stream(tenant, "full")
    letters = await nc.subscribe(f"tenants.{tenant}.deadletter")
    runs = []
    for n, schedule in enumerate(created):
        if n == 1:  # the queue now holds one unconsumed message: make that its limit
            config = (await nc.jsm().stream_info(stream)).config
            config.max_msgs = 1
            await nc.jsm().update_stream(config)
        ran = await client.post(f"/schedules/{schedule.json()['id']}/run", headers=headers())
        assert ran.status_code == 202, ran.text
        runs.append(await settled(client, headers, schedule.json()["id"]))
    assert [r["status"] for r in runs] == ["SUCCEEDED", "FAILED"], runs
    assert "maximum messages" in runs[1]["error"] and runs[1]["attempt"] == FAST_RETRY["maxAttempts"]
    letter = msgspec.json.decode((await letters.next_msg(timeout=5)).data)
    assert letter["data"]["runId"] == runs[1]["id"]
    assert await messages(nc, stream) == 1  # the queued work was kept, the new one refused


async def test_a_refused_batched_event_is_retried_one_by_one_and_fails_with_the_reason(
    client, headers, worker, nc, tenant
):
    first = await create(client, headers, {"kind": "EVENT", "eventTopic": "refused"})
    assert (await settled(client, headers, first.json()["id"]))["status"] == "SUCCEEDED"
    stream = NAMESPACE.event_stream(tenant)
    config = (await nc.jsm().stream_info(stream)).config
    config.max_msgs, config.discard = 1, DiscardPolicy.NEW  # full: JetStream now refuses what follows
    await nc.jsm().update_stream(config)
    second = await create(client, headers, {"kind": "EVENT", "eventTopic": "refused"})
    run = await settled(client, headers, second.json()["id"])
    assert run["status"] == "FAILED" and "maximum messages" in run["error"], run
    assert run["attempt"] == FAST_RETRY["maxAttempts"]
