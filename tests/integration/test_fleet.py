"""Several worker processes on one database: every occurrence delivered, none twice; SIGKILL and SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import psycopg
import pytest

from shared.model import (
    EventTarget,
    HttpSpec,
    HttpTarget,
    Target,
)
from tests.integration.conftest import event_subject
from tests.integration.fleet_tools import seed_due, spawn_worker
from tests.integration.receivers import HttpReceiver, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def seed(db_url: str, tenant: str, count: int, target: Target, window_sec: float, start_in: float = 1.0) -> None:
    """``count`` ONE_SHOT schedules due spread over ``window_sec`` seconds from ``start_in`` seconds from now."""
    now = datetime.now(UTC)
    seed_due(db_url, tenant, [now + timedelta(seconds=start_in + window_sec * i / count) for i in range(count)], target)


@pytest.fixture
def workers(db_url: str, nats_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.fixture
async def collector(nats_url: str) -> AsyncIterator[tuple[nats.NATS, Counter[str]]]:
    nc = await nats.connect(nats_url)
    yield nc, Counter()
    await nc.drain()


async def subscribe(nc: nats.NATS, subject: str, counts: Counter[str]) -> None:
    async def on_message(msg) -> None:  # type: ignore[no-untyped-def]
        counts[msgspec.json.decode(msg.data)["id"]] += 1

    await nc.subscribe(subject, cb=on_message)
    await nc.flush()


def run_stats(db_url: str, tenant: str) -> tuple[set[str], Counter[str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT idempotency_key, status FROM runs WHERE tenant_id = %s", (tenant,)).fetchall()
    return {r[0] for r in rows}, Counter(r[1] for r in rows)


async def test_four_workers_deliver_every_occurrence_once(db_url, nats_url, workers, collector):
    nc, received = collector
    tenant = f"fleet-{uuid.uuid4().hex[:6]}"
    topic = "fleet.events"
    await subscribe(nc, event_subject(tenant, topic), received)
    seed(db_url, tenant, 2000, EventTarget(event_topic=topic), window_sec=3.0, start_in=2.0)
    workers.extend(spawn_worker(db_url, nats_url) for _ in range(4))
    await eventually(lambda: len(received) >= 2000, timeout=60, step=0.2)
    await asyncio.sleep(1.0)  # let any duplicate arrive
    assert len(received) == 2000 and max(received.values()) == 1
    await eventually(lambda: run_stats(db_url, tenant)[1]["SUCCEEDED"] == 2000, timeout=20, step=0.2)
    keys, _ = run_stats(db_url, tenant)
    assert keys == set(received)


async def test_sigkill_mid_batch_loses_nothing(db_url, nats_url, workers, collector):
    nc, received = collector
    tenant = f"crash-{uuid.uuid4().hex[:6]}"
    topic = "crash.events"
    await subscribe(nc, event_subject(tenant, topic), received)
    seed(db_url, tenant, 3000, EventTarget(event_topic=topic), window_sec=2.0, start_in=1.5)
    # A short lease so the victim's runs are rescued within the test's patience.
    env = {"RUN_LEASE_SEC": "2", "WORKER_BATCH_SIZE": "200"}
    workers.extend(spawn_worker(db_url, nats_url, **env) for _ in range(3))
    await eventually(lambda: len(received) >= 300, timeout=30, step=0.02)
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    await eventually(lambda: len(received) >= 3000, timeout=90, step=0.2)
    await eventually(lambda: run_stats(db_url, tenant)[1]["SUCCEEDED"] == 3000, timeout=30, step=0.2)
    keys, _statuses = run_stats(db_url, tenant)
    assert len(keys) == 3000 and set(received) == keys  # each occurrence recorded once and delivered
    duplicates = sum(n - 1 for n in received.values())
    print(f"crash test: {duplicates} duplicate deliveries (same key) after SIGKILL")


async def test_sigterm_mid_batch_exits_cleanly(db_url, nats_url, workers):
    receiver = HttpReceiver()

    async def slow(n: int):  # type: ignore[no-untyped-def]
        await asyncio.sleep(1.5)
        from aiohttp import web

        return web.Response(status=200)

    receiver.behave["/slow"] = slow
    await receiver.start()
    try:
        tenant = f"term-{uuid.uuid4().hex[:6]}"
        target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/slow"))
        seed(db_url, tenant, 20, target, window_sec=0.2, start_in=0.5)
        proc = spawn_worker(db_url, nats_url, WORKER_SHUTDOWN_GRACE_SEC="10")
        workers.append(proc)
        await eventually(lambda: len(receiver.requests) >= 20, timeout=20)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0
        _, statuses = run_stats(db_url, tenant)
        assert statuses == Counter({"SUCCEEDED": 20})  # in-flight runs finished within the grace period
    finally:
        await receiver.stop()


async def test_sigterm_releases_what_cannot_finish(db_url, nats_url, workers):
    receiver = HttpReceiver()

    async def stuck(n: int):  # type: ignore[no-untyped-def]
        await asyncio.sleep(30)

    receiver.behave["/stuck"] = stuck
    await receiver.start()
    try:
        tenant = f"rel-{uuid.uuid4().hex[:6]}"
        target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/stuck", timeout_sec=60))
        seed(db_url, tenant, 5, target, window_sec=0.1, start_in=0.3)
        proc = spawn_worker(db_url, nats_url, WORKER_SHUTDOWN_GRACE_SEC="1")
        workers.append(proc)
        await eventually(lambda: len(receiver.requests) >= 5, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT status, lease_until <= now() FROM runs WHERE tenant_id = %s", (tenant,)
            ).fetchall()
        # Not stuck: still open, and immediately available to any other worker.
        assert rows and all(status == "PENDING" and free for status, free in rows), rows
    finally:
        await receiver.stop()
