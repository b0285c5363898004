"""A worker against real Postgres, NATS and HTTP: every target type, retries, dead letters, misfires."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import nats
import psycopg
import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from shared.model import RetryPolicy, Target
from shared.settings import Settings
from tests.integration.conftest import NAMESPACE, Headers, event_subject
from tests.integration.receivers import eventually
from worker.fire import Delivered, Fire
from worker.runtime import open_worker
from worker.targets.nats import NatsPublisher

pytestmark = pytest.mark.asyncio
FAST_RETRY = {"maxAttempts": 3, "backoffSec": 0.2, "maxBackoffSec": 2}


@pytest.fixture(scope="module")
async def worker(settings: Settings, nats_url: str) -> AsyncIterator[None]:
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=0.2, worker_batch_size=50)
    async with open_worker(config) as w:
        task = asyncio.create_task(w.run())
        yield
        w.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()  # not drain(): a pull subscription left open would hold it for 30 s


def soon(seconds: float = 0.3) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def create(client, headers: Headers, target: dict, trigger: dict | None = None, **extra) -> dict:
    body = {
        "name": f"s-{datetime.now(UTC).timestamp()}",
        "trigger": trigger or {"type": "ONE_SHOT", "startAt": soon()},
        "target": target,
        "retry": FAST_RETRY,
        **extra,
    }
    response = await client.post("/schedules", json=body, headers=headers())
    assert response.status_code == 201, response.text
    return response.json()


async def runs_of(client, headers: Headers, schedule_id: str) -> list[dict]:
    response = await client.get(f"/schedules/{schedule_id}/runs?pageSize=200", headers=headers())
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def settled_runs(client, headers: Headers, schedule_id: str, count: int = 1, timeout: float = 15) -> list[dict]:
    """Wait until ``count`` runs of the schedule reached a final status."""
    result: list[dict] = []

    async def check() -> bool:
        nonlocal result
        result = await runs_of(client, headers, schedule_id)
        final = [r for r in result if r["status"] in ("SUCCEEDED", "FAILED", "CANCELLED")]
        return len(final) >= count

    await eventually(check, timeout)
    return result


async def test_event_target_publishes_a_cloudevent_durably(client, headers, worker, nc, tenant):
    """EVENT is durable by default: published through the tenant's event stream, SUCCEEDED once acked."""
    sub = await nc.subscribe(event_subject(tenant, "it.event.core"))
    created = await create(client, headers, {"kind": "EVENT", "eventTopic": "it.event.core"}, payload={"a": 1})
    msg = await sub.next_msg(timeout=10)
    event = msgspec.json.decode(msg.data)
    scheduled_for = created["nextRunAt"]
    assert msg.subject == f"tenants.{tenant}.it.event.core"
    assert event["specversion"] == "1.0" and event["type"] == "it.event.core"
    assert event["subject"] == created["id"] and event["tenantid"] == tenant
    assert event["data"] == {"a": 1} and event["datacontenttype"] == "application/json"
    assert event["id"] == msg.headers["Nats-Msg-Id"] and event["id"].startswith(created["id"] + ":")
    assert datetime.fromisoformat(event["scheduledfor"]) == datetime.fromisoformat(scheduled_for)
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED" and run["attempt"] == 1
    assert run["delivery"]["via"] == "jetstream" and run["delivery"]["delivery"] == "DURABLE"
    assert run["delivery"]["stream"] == NAMESPACE.event_stream(tenant) and run["delivery"]["seq"] >= 1
    assert run["idempotencyKey"] == event["id"]
    one = await client.get(f"/runs/{run['id']}", headers=headers())
    assert one.json() == run
    schedule = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
    assert schedule["status"] == "COMPLETED" and schedule["nextRunAt"] is None
    # The stream holds it (a subscriber that was not connected can still read it), keyed for dedupe.
    stored = await nc.jetstream().get_last_msg(NAMESPACE.event_stream(tenant), msg.subject)
    assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == run["idempotencyKey"]


async def test_at_most_once_event_is_a_core_publish_recorded_as_such(client, headers, worker, nc, tenant):
    sub = await nc.subscribe(event_subject(tenant, "it.event.quick"))
    target = {"kind": "EVENT", "eventTopic": "it.event.quick", "delivery": "AT_MOST_ONCE"}
    created = await create(client, headers, target)
    assert created["target"]["delivery"] == "AT_MOST_ONCE"
    msg = await sub.next_msg(timeout=10)
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED" and run["idempotencyKey"] == msg.headers["Nats-Msg-Id"]
    assert run["delivery"] == {"via": "core", "subject": msg.subject, "delivery": "AT_MOST_ONCE"}


async def test_a_republished_event_is_stored_once(worker, nc, tenant):
    """Nats-Msg-Id = the idempotency key: a second publish of one run (a retry, a rescue) is a duplicate."""
    publisher = NatsPublisher(nc, lambda: datetime.now(UTC))
    fire = Fire(
        run_id="00000000-0000-5000-8000-000000000001",
        schedule_id="s",
        tenant_id=tenant,
        scheduled_for=datetime.now(UTC),
        key=f"s:{tenant}",
        target=msgspec.convert({"kind": "EVENT", "eventTopic": "it.dedupe"}, Target),
        payload=msgspec.Raw(b"null"),
        retry=msgspec.convert({}, RetryPolicy),
    )
    first, second = await publisher.publish_durable_many([fire, fire])
    again = await publisher.send(fire)
    assert isinstance(first, Delivered) and isinstance(second, Delivered)
    assert [first.detail["duplicate"], second.detail["duplicate"], again.detail["duplicate"]].count(False) == 1
    info = await nc.jsm().stream_info(NAMESPACE.event_stream(tenant))
    assert info.state.messages == 1


async def test_queue_target_is_received_by_exactly_one_consumer(client, headers, worker, nc, tenant):
    created = await create(
        client, headers, {"kind": "QUEUE", "queue": {"topic": "it.jobs.reports"}}, payload={"job": 7}
    )
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED", run
    js = nc.jetstream()
    stream = run["delivery"]["stream"]
    assert stream == NAMESPACE.queue_stream(tenant, "it.jobs.reports")
    info = await js.stream_info(stream)
    assert info.config.retention == "workqueue" and info.config.duplicate_window >= 60
    assert info.config.subjects == [f"queues.{tenant}.it.jobs.reports"]
    first = await js.pull_subscribe(f"queues.{tenant}.it.jobs.reports", durable="reporters", stream=stream)
    [msg] = await first.fetch(1, timeout=5)
    assert msgspec.json.decode(msg.data)["data"] == {"job": 7}
    await msg.ack()
    with pytest.raises(nats.errors.TimeoutError):
        await first.fetch(1, timeout=0.5)
    # Work-queue retention: an acked message is gone for everyone.
    assert (await js.stream_info(stream)).state.messages == 0


async def test_http_target_sends_payload_and_idempotency_key(client, headers, worker, receiver):
    target = {"kind": "HTTP", "http": {"url": f"{receiver.url}/ok", "headers": {"X-Custom": "yes"}}}
    created = await create(client, headers, target, payload={"report": "daily"})
    [run] = await settled_runs(client, headers, created["id"])
    [request] = receiver.on("/ok")
    assert request.method == "POST" and request.json() == {"report": "daily"}
    assert request.headers["Idempotency-Key"] == run["idempotencyKey"]
    assert request.headers["X-Custom"] == "yes" and request.headers["Content-Type"] == "application/json"
    assert run["status"] == "SUCCEEDED" and run["httpStatus"] == 200 and run["delivery"]["response"]


async def test_http_500_is_retried_with_the_same_key(client, headers, worker, receiver):
    async def flaky(n: int) -> web.Response:
        return web.Response(status=500 if n < 3 else 204)

    receiver.behave["/flaky"] = flaky
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/flaky"}})
    [run] = await settled_runs(client, headers, created["id"])
    requests = receiver.on("/flaky")
    assert run["status"] == "SUCCEEDED" and run["attempt"] == 3 and len(requests) == 3
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    gaps = [b.started - a.started for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # exponential backoff with jitter (>= 50% of 0.2 s, 0.4 s)


async def test_http_429_honours_retry_after(client, headers, worker, receiver):
    async def busy(n: int) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "1"}) if n == 1 else web.Response(status=200)

    receiver.behave["/busy"] = busy
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/busy"}})
    [run] = await settled_runs(client, headers, created["id"])
    first, second = receiver.on("/busy")
    assert run["status"] == "SUCCEEDED" and run["attempt"] == 2
    assert second.started - first.started >= 0.95


async def test_http_timeout_is_retried(client, headers, worker, receiver):
    async def slow_once(n: int) -> web.Response:
        if n == 1:
            await asyncio.sleep(2)
        return web.Response(status=200)

    receiver.behave["/slow"] = slow_once
    target = {"kind": "HTTP", "http": {"url": f"{receiver.url}/slow", "timeoutSec": 0.5}}
    created = await create(client, headers, target)
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED" and run["attempt"] == 2


async def test_http_400_is_not_retried_and_is_dead_lettered(client, headers, worker, receiver, nc, tenant):
    deadletters = await nc.subscribe(f"tenants.{tenant}.deadletter")
    operator_copy = await nc.subscribe("scheduler.deadletter")

    async def bad(n: int) -> web.Response:
        return web.Response(status=400, text="no such report")

    receiver.behave["/bad"] = bad
    created = await create(
        client,
        headers,
        {"kind": "HTTP", "http": {"url": f"{receiver.url}/bad", "secretHeaders": {"Authorization": "secret"}}},
    )
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "FAILED" and run["attempt"] == 1 and run["httpStatus"] == 400
    assert "no such report" in run["error"]
    assert len(receiver.on("/bad")) == 1
    msg = await deadletters.next_msg(timeout=5)
    event = msgspec.json.decode(msg.data)
    assert event["type"] == "scheduler.run.failed" and event["data"]["runId"] == run["id"]
    assert event["tenantid"] == tenant and "secret" not in msg.data.decode()
    copy = await operator_copy.next_msg(timeout=5)
    assert copy.data == msg.data


async def test_exhausted_retries_fail_and_dead_letter(client, headers, worker, receiver, nc, tenant):
    deadletters = await nc.subscribe(f"tenants.{tenant}.deadletter")

    async def down(n: int) -> web.Response:
        return web.Response(status=503)

    receiver.behave["/down"] = down
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/down"}})
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "FAILED" and run["attempt"] == 3 and len(receiver.on("/down")) == 3
    event = msgspec.json.decode((await deadletters.next_msg(timeout=5)).data)
    assert event["data"]["runId"] == run["id"] and event["data"]["attempts"] == 3


async def test_fixed_delay_never_overlaps_a_slow_target(client, headers, worker, receiver):
    async def slow(n: int) -> web.Response:
        await asyncio.sleep(0.8)
        return web.Response(status=200)

    receiver.behave["/fixed"] = slow
    trigger = {"type": "FIXED_DELAY", "delaySec": 1, "startAt": soon(0.2)}
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/fixed"}}, trigger)
    await eventually(lambda: len([r for r in receiver.on("/fixed") if r.finished]) >= 3, timeout=20)
    await client.patch(f"/schedules/{created['id']}", json={"enabled": False}, headers=headers())
    requests = [r for r in receiver.on("/fixed") if r.finished]
    for previous, following in itertools.pairwise(requests):
        # The next run starts delaySec after the previous one *finished*.
        assert following.started - previous.finished >= 0.95


async def test_one_shot_fires_exactly_once(client, headers, worker, receiver):
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/once"}})
    await settled_runs(client, headers, created["id"])
    await asyncio.sleep(1.0)  # several poll intervals
    assert len(receiver.on("/once")) == 1
    assert len(await runs_of(client, headers, created["id"])) == 1


async def test_manual_run_goes_through_the_outbox(client, headers, worker, receiver):
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    target = {"kind": "HTTP", "http": {"url": f"{receiver.url}/manual"}}
    created = await create(client, headers, target, {"type": "ONE_SHOT", "startAt": later})
    response = await client.post(f"/schedules/{created['id']}/run", headers=headers())
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["manual"] and run["status"] == "PENDING" and response.headers["location"] == f"/runs/{run['id']}"
    [settled] = await settled_runs(client, headers, created["id"], timeout=10)
    assert settled["status"] == "SUCCEEDED" and settled["id"] == run["id"]
    assert receiver.on("/manual")[0].headers["Idempotency-Key"] == run["idempotencyKey"]
    schedule = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
    assert schedule["nextRunAt"] == created["nextRunAt"]  # the regular sequence is untouched


async def test_run_history_filters_and_404s(client, headers, worker, receiver, tenant):
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/hist"}})
    await settled_runs(client, headers, created["id"])
    ok = await client.get(f"/schedules/{created['id']}/runs?status=SUCCEEDED", headers=headers())
    assert ok.json()["total"] == 1
    none = await client.get(f"/schedules/{created['id']}/runs?status=FAILED", headers=headers())
    assert none.json()["total"] == 0
    bad = await client.get(f"/schedules/{created['id']}/runs?status=NOPE", headers=headers())
    assert bad.status_code == 400
    run_id = ok.json()["items"][0]["id"]
    other = headers(tenant_id="other-" + tenant)
    assert (await client.get(f"/runs/{run_id}", headers=other)).status_code == 404
    assert (await client.get(f"/schedules/{created['id']}/runs", headers=other)).status_code == 404
    assert (await client.post(f"/schedules/{created['id']}/run", headers=other)).status_code == 404


@pytest.mark.parametrize(("policy", "expected_runs"), [("FIRE_ONCE", 1), ("SKIP", 0), ("CATCH_UP", 3)])
async def test_misfire_policy_after_an_outage(client, headers, worker, receiver, db_url, policy, expected_runs):
    """An hourly schedule whose next_run_at is 5 hours in the past, as after a long outage."""
    path = f"/misfire-{policy}"
    now = datetime.now(UTC)
    minute = (now.minute + 30) % 60  # the nearest occurrence is ~30 minutes away: none is on time
    created = await create(
        client,
        headers,
        {"kind": "HTTP", "http": {"url": f"{receiver.url}{path}"}},
        {"type": "CRON", "cron": f"{minute} * * * *"},
        enabled=False,
        misfirePolicy=policy,
        catchUpLimit=3,
    )
    # Paused, it shows no next run (nextRunAt: null); its preview says when it would fire.
    preview = (await client.get(f"/schedules/{created['id']}/preview?count=1", headers=headers())).json()
    rewound = datetime.fromisoformat(preview["fireTimes"][0]) - timedelta(hours=6)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Enable and rewind in one statement, so the worker never sees it half done.
        conn.execute("UPDATE schedules SET enabled = true, next_run_at = %s WHERE id = %s", (rewound, created["id"]))

    async def advanced() -> bool:
        got = (await client.get(f"/schedules/{created['id']}", headers=headers())).json()
        return datetime.fromisoformat(got["nextRunAt"]) > now

    await eventually(advanced)
    if expected_runs:
        await settled_runs(client, headers, created["id"], count=expected_runs)
    await asyncio.sleep(0.5)
    runs = await runs_of(client, headers, created["id"])
    assert len(runs) == expected_runs == len(receiver.on(path)), runs
    fired = sorted(datetime.fromisoformat(r["scheduledFor"]) for r in runs)
    if policy == "FIRE_ONCE":
        assert fired == [rewound]
    if policy == "CATCH_UP":
        assert fired == [rewound + timedelta(hours=h) for h in range(3)]


async def test_a_response_with_nul_bytes_is_recorded(client, headers, worker, receiver):
    async def nul(n: int) -> web.Response:
        return web.Response(status=500 if n == 1 else 200, body=b"bad\x00body")

    receiver.behave["/nul"] = nul
    created = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/nul"}})
    [run] = await settled_runs(client, headers, created["id"])
    assert run["status"] == "SUCCEEDED" and run["attempt"] == 2
    assert run["delivery"]["response"] == "bad\ufffdbody"
    # The writer survived: the next run is recorded too.
    again = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/ok"}})
    assert (await settled_runs(client, headers, again["id"]))[0]["status"] == "SUCCEEDED"


async def test_editing_a_fixed_delay_schedule_while_its_run_is_in_flight(client, headers, worker, receiver):
    async def slow(n: int) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(status=200)

    receiver.behave["/parked"] = slow
    target = {"kind": "HTTP", "http": {"url": f"{receiver.url}/parked"}}
    created = await create(client, headers, target, {"type": "FIXED_DELAY", "delaySec": 30, "startAt": soon(0.1)})
    await eventually(lambda: len(receiver.on("/parked")) == 1)
    url = f"/schedules/{created['id']}"
    edited = await client.patch(url, json={"trigger": {"type": "FIXED_DELAY", "delaySec": 2}}, headers=headers())
    assert edited.status_code == 200 and edited.json()["nextRunAt"] is None  # still parked: no overlap
    assert edited.json()["status"] == "ACTIVE"
    [run] = await settled_runs(client, headers, created["id"])
    finished = datetime.fromisoformat(run["finishedAt"])

    async def rearmed() -> bool:
        return (await client.get(url, headers=headers())).json()["nextRunAt"] is not None

    await eventually(rearmed)
    next_run = datetime.fromisoformat((await client.get(url, headers=headers())).json()["nextRunAt"])
    assert abs((next_run - finished).total_seconds() - 2) < 0.05  # the edited delay, from the finish
    await client.patch(url, json={"enabled": False}, headers=headers())


async def test_a_schedule_that_cannot_be_planned_does_not_block_the_others(client, headers, worker, nc, db_url, tenant):
    sub = await nc.subscribe(event_subject(tenant, "it.after.poison"))
    broken = await create(
        client,
        headers,
        {"kind": "EVENT", "eventTopic": "it.poison"},
        {"type": "CRON", "cron": "* * * * *"},
        enabled=False,
    )
    past = datetime.now(UTC) - timedelta(seconds=5)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # A zone this machine does not know (as after a tzdata change), due before everything else.
        conn.execute(
            "UPDATE schedules SET tz = 'Mars/Olympus', enabled = true, next_run_at = %s WHERE id = %s",
            (past - timedelta(hours=1), broken["id"]),
        )
    await create(client, headers, {"kind": "EVENT", "eventTopic": "it.after.poison"})
    await sub.next_msg(timeout=10)
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT next_run_at FROM schedules WHERE id = %s", (broken["id"],)).fetchone()
    assert row is not None and row[0] > datetime.now(UTC) + timedelta(minutes=4)  # set aside, not retried hot


async def test_deliveries_are_signed_per_standard_webhooks(client, headers, worker, receiver):
    target = {"kind": "HTTP", "http": {"url": f"{receiver.url}/signed", "secretHeaders": {"X-Api-Key": "k-123"}}}
    created = await create(client, headers, target, payload={"hello": "world"})
    await settled_runs(client, headers, created["id"])
    [request] = receiver.on("/signed")
    assert request.headers["X-Api-Key"] == "k-123"  # sealed at rest, sent in clear
    assert request.headers["webhook-id"] == request.headers["Idempotency-Key"]
    Webhook(created["webhookSecret"]).verify(request.body, request.headers)  # raises when it does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(created["webhookSecret"]).verify(request.body + b" ", request.headers)


async def test_redirects_are_followed_only_when_asked_and_every_hop_is_checked(client, headers, worker, receiver):
    async def moved(n: int) -> web.Response:
        return web.Response(status=302, headers={"Location": "/landing"})

    async def to_metadata(n: int) -> web.Response:
        return web.Response(status=307, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    receiver.behave["/moved"] = moved
    receiver.behave["/to-metadata"] = to_metadata
    plain = await create(client, headers, {"kind": "HTTP", "http": {"url": f"{receiver.url}/moved"}})
    [run] = await settled_runs(client, headers, plain["id"])
    assert run["status"] == "FAILED" and run["httpStatus"] == 302 and not receiver.on("/landing")

    follow = {"kind": "HTTP", "http": {"url": f"{receiver.url}/moved", "followRedirects": True}}
    followed = await create(client, headers, follow)
    [run] = await settled_runs(client, headers, followed["id"])
    assert run["status"] == "SUCCEEDED" and receiver.on("/landing")[0].method == "GET"

    sneaky = {"kind": "HTTP", "http": {"url": f"{receiver.url}/to-metadata", "followRedirects": True}}
    refused = await create(client, headers, sneaky)
    [run] = await settled_runs(client, headers, refused["id"])
    assert run["status"] == "FAILED" and run["attempt"] == 1 and "SSRF" in run["error"]


@pytest.mark.parametrize("delivery", ["AT_MOST_ONCE", "DURABLE"])
async def test_fixed_delay_events_recorded_per_published_batch_are_rearmed(
    client, headers, worker, nc, tenant, delivery
):
    """EVENTs are published and recorded per batch (core: one statement for the batch; durable: acks awaited
    together): a FIXED_DELAY schedule parked behind such a run is still re-armed delaySec after it finished, and
    each run is recorded in full."""
    sub = await nc.subscribe(event_subject(tenant, "it.event.fixed"))
    trigger = {"type": "FIXED_DELAY", "delaySec": 1, "startAt": soon(0.2)}
    target = {"kind": "EVENT", "eventTopic": "it.event.fixed", "delivery": delivery}
    created = await create(client, headers, target, trigger)
    events = [msgspec.json.decode((await sub.next_msg(timeout=10)).data) for _ in range(3)]
    await client.patch(f"/schedules/{created['id']}", json={"enabled": False}, headers=headers())
    fired = [datetime.fromisoformat(e["scheduledfor"]) for e in events]
    for previous, following in itertools.pairwise(fired):
        assert following - previous >= timedelta(seconds=1)
    runs = await settled_runs(client, headers, created["id"], count=3)
    for run in (r for r in runs if r["idempotencyKey"] in {e["id"] for e in events}):
        via = "core" if delivery == "AT_MOST_ONCE" else "jetstream"
        assert run["status"] == "SUCCEEDED" and run["attempt"] == 1 and run["delivery"]["via"] == via, run
        assert run["startedAt"] <= run["finishedAt"] and run["durationMs"] is not None, run


async def test_an_occurrence_claimed_again_is_not_delivered_again(client, headers, worker, nc, db_url, tenant):
    """A schedule due again at an occurrence already recorded (rewound by hand here) records no second run and
    delivers nothing again; a FIXED_DELAY schedule parked behind that occurrence is re-armed, not left parked."""
    sub = await nc.subscribe(event_subject(tenant, "it.event.again"))
    trigger = {"type": "FIXED_DELAY", "delaySec": 2, "startAt": soon(0.2)}
    created = await create(client, headers, {"kind": "EVENT", "eventTopic": "it.event.again"}, trigger)
    first = msgspec.json.decode((await sub.next_msg(timeout=10)).data)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE schedules SET next_run_at = %s, parked_run_id = NULL WHERE id = %s",
            (datetime.fromisoformat(first["scheduledfor"]), created["id"]),
        )
    following = msgspec.json.decode((await sub.next_msg(timeout=10)).data)
    await client.patch(f"/schedules/{created['id']}", json={"enabled": False}, headers=headers())
    assert following["id"] != first["id"]
    assert datetime.fromisoformat(following["scheduledfor"]) > datetime.fromisoformat(first["scheduledfor"])
    keys = [r["idempotencyKey"] for r in await runs_of(client, headers, created["id"])]
    assert keys.count(first["id"]) == 1, keys
