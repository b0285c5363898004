"""NOTIFY wakes idle workers; a PATCH that disables a due schedule wins over a worker that has not claimed it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import nats
import pytest

from shared.settings import Settings
from tests.integration.conftest import event_subject
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio


async def test_a_schedule_due_soon_does_not_wait_for_the_idle_poll(
    client, headers, settings: Settings, nats_url, tenant
):
    idle_poll = 5.0
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=idle_poll)
    nc = await nats.connect(nats_url)
    sub = await nc.subscribe(event_subject(tenant, "it.wakeup"))
    async with open_worker(config) as worker:
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)  # the worker is now asleep for up to idle_poll seconds
        due = datetime.now(UTC) + timedelta(seconds=0.3)
        body = {
            "name": "wake",
            "trigger": {"type": "ONE_SHOT", "startAt": due.isoformat()},
            "target": {"kind": "EVENT", "eventTopic": "it.wakeup"},
        }
        started = time.monotonic()
        assert (await client.post("/schedules", json=body, headers=headers())).status_code == 201
        await sub.next_msg(timeout=idle_poll)
        assert time.monotonic() - started < 2.0  # woken by NOTIFY, not by the 5 s poll
        worker.request_stop()
        await task
    await nc.close()


async def test_disabling_a_due_schedule_before_it_is_claimed_prevents_the_run(
    client, headers, settings: Settings, nats_url
):
    past = datetime.now(UTC) - timedelta(minutes=1)
    body = {
        "name": "disabled-in-time",
        "trigger": {"type": "ONE_SHOT", "startAt": past.isoformat()},
        "target": {"kind": "EVENT", "eventTopic": "it.disabled"},
    }
    created = (await client.post("/schedules", json=body, headers=headers())).json()
    # No worker is running: the schedule is due and unclaimed when the PATCH returns.
    patched = await client.patch(f"/schedules/{created['id']}", json={"enabled": False}, headers=headers())
    assert patched.status_code == 200 and patched.json()["status"] == "PAUSED"
    config = dataclasses.replace(settings, nats_url=nats_url, worker_poll_max_sec=0.1)
    async with open_worker(config) as worker:
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)
        worker.request_stop()
        await task
    runs = (await client.get(f"/schedules/{created['id']}/runs", headers=headers())).json()
    assert runs["total"] == 0
