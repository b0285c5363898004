"""The outbox relay against real Postgres and NATS: a relay that dies after publishing, before deleting, leaves
its events to the next one, which publishes them again with the same ids (the stream keeps each once)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats
import psycopg
import pytest

from shared.settings import Settings
from tests.integration.conftest import NAMESPACE, event_subject
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio


def outbox(db_url: str, tenant: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM schedule_events WHERE tenant_id = %s", (tenant,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_relay_crash_between_publish_and_delete_duplicates_only_with_the_same_id(
    client, headers, settings: Settings, nats_url, tenant, db_url
):
    nc = await nats.connect(nats_url)
    sub = await nc.subscribe(event_subject(tenant, "scheduler.>"))
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for i in range(5):
        body = {
            "name": f"relay-{i}",
            "trigger": {"type": "ONE_SHOT", "startAt": start},
            "target": {"kind": "EVENT", "eventTopic": "x"},
        }
        assert (await client.post("/schedules", json=body, headers=headers())).status_code == 201
    assert outbox(db_url, tenant) == 5  # no worker yet: the events wait in the outbox

    config = dataclasses.replace(settings, nats_url=nats_url)
    async with open_worker(config) as worker:
        relay = worker.relay
        assert relay is not None
        publish = relay._publish

        async def publish_then_die(rows: list[dict[str, Any]]) -> list[int]:
            await publish(rows)
            raise RuntimeError("the relay dies before its transaction commits")

        relay._publish = publish_then_die  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await relay.relay_once()
        assert outbox(db_url, tenant) == 5  # rolled back: nothing deleted
        relay._publish = publish  # type: ignore[method-assign]
        assert await relay.relay_once() >= 5
        assert outbox(db_url, tenant) == 0
        assert await relay.relay_once() == 0

    seen = []
    for _ in range(10):
        msg = await sub.next_msg(timeout=5)
        seen.append(msgspec.json.decode(msg.data))
    ids = [e["id"] for e in seen]
    assert len(set(ids)) == 5 and ids[:5] == ids[5:]  # every event twice, with the same id, in the same order
    sequences = [int(e["sequence"]) for e in seen[:5]]
    assert sequences == sorted(sequences)
    assert [e["data"]["schedule"]["name"] for e in seen[:5]] == [f"relay-{i}" for i in range(5)]

    # The tenant's stream stored each once (Nats-Msg-Id = event id).
    js = nc.jetstream()
    stream = NAMESPACE.event_stream(tenant)
    info = await js.stream_info(stream)
    assert info.state.messages == 5
    stored = [await js.get_msg(stream, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    assert sorted(msgspec.json.decode(m.data or b"{}")["id"] for m in stored) == sorted(set(ids))
    await nc.close()


async def test_outbox_rows_are_tenant_scoped_for_the_api_role(db_url, tenant):
    """The API's role may only write events of the tenant of its transaction (and read none)."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM schedule_events")
        conn.rollback()
        conn.execute("SET ROLE scheduler_api")
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO schedule_events (tenant_id, schedule_id, type) VALUES ('other', gen_random_uuid(), 'x')"
            )


async def test_a_tenant_whose_stream_refuses_events_does_not_hold_up_the_others(
    client, headers, settings: Settings, nats_url, db_url
):
    from nats.js.api import DiscardPolicy, StreamConfig

    from worker.events import EventRelay

    blocked, fine = f"blk-{uuid.uuid4().hex[:6]}", f"ok-{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    # An operator's full stream in the way of the blocked tenant's events: every publish there is refused.
    await js.add_stream(
        StreamConfig(
            name=f"FULL_{blocked.replace('-', '_')}",
            subjects=[f"tenants.{blocked}.>"],
            max_msgs=1,
            discard=DiscardPolicy.NEW,
        )
    )
    await js.publish(f"tenants.{blocked}.filler", b"{}")
    sub = await nc.subscribe(event_subject(fine, "scheduler.>"))
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for tenant_id in (blocked, blocked, blocked, fine):
        body = {
            "name": f"s-{uuid.uuid4().hex[:6]}",
            "trigger": {"type": "ONE_SHOT", "startAt": start},
            "target": {"kind": "EVENT", "eventTopic": "x"},
        }
        assert (await client.post("/schedules", json=body, headers=headers(tenant_id=tenant_id))).status_code == 201

    config = dataclasses.replace(settings, nats_url=nats_url)
    async with open_worker(config) as worker:
        assert worker.relay is not None
        relay = EventRelay(worker.store, worker.relay.publisher, worker.relay.ns, batch=2)
        for _ in range(3):
            await relay.relay_once()
    event = msgspec.json.decode((await sub.next_msg(timeout=5)).data)
    assert event["tenantid"] == fine and event["type"] == "scheduler.schedule.created"
    assert outbox(db_url, blocked) == 3 and outbox(db_url, fine) == 0  # kept, to be published once it can be
    await nc.close()
