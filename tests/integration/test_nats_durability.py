"""DURABLE EVENTs survive a NATS server crash: every run recorded SUCCEEDED is in the tenant's stream, once.

A NATS server of the test's own (fixed port, so it can be restarted in place) is SIGKILLed in the middle of a
burst delivered by two worker processes, then restarted on the same store.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from devstack.nats import _binary
from devstack.processes import port_accepts, wait_until
from shared.model import EventTarget
from tests.integration.conftest import NAMESPACE
from tests.integration.receivers import eventually
from tests.integration.test_fleet import seed, spawn_worker

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
COUNT = 1500


class RestartableNats:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sched-nats-chaos-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir)]
        with (self.dir / "nats.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        assert wait_until(lambda: port_accepts(self.port), 15), "nats-server did not start"

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[RestartableNats]:
    srv = RestartableNats()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def workers(db_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def statuses(db_url: str, tenant: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT idempotency_key, status FROM runs WHERE tenant_id = %s", (tenant,)).fetchall()
    return {key: status for key, status in rows}


async def stored_keys(url: str, tenant: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = NAMESPACE.event_stream(tenant)
        info = await js.stream_info(stream)
        keys = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            assert msg.headers is not None
            if msg.subject and msg.subject.startswith(NAMESPACE.event_subject(tenant, "scheduler.")):
                continue  # a lifecycle event (schedule.exhausted...), which the tenant's stream keeps too
            keys.append(msg.headers["Nats-Msg-Id"])
        return keys
    finally:
        await nc.close()


async def test_a_nats_crash_mid_burst_loses_no_succeeded_event(db_url, server, workers):
    tenant = f"chaos-{uuid.uuid4().hex[:6]}"
    seed(db_url, tenant, COUNT, EventTarget(event_topic="chaos"), window_sec=4.0, start_in=1.5)
    workers.extend(spawn_worker(db_url, server.url, RUN_LEASE_SEC="5") for _ in range(2))
    await eventually(lambda: list(statuses(db_url, tenant).values()).count("SUCCEEDED") >= COUNT // 5, 60, 0.02)
    server.kill()
    killed_at = list(statuses(db_url, tenant).values()).count("SUCCEEDED")
    await asyncio.sleep(1.0)
    server.start()  # same port, same store
    await eventually(lambda: list(statuses(db_url, tenant).values()).count("SUCCEEDED") == COUNT, 120, 0.2)
    keys = await stored_keys(server.url, tenant)
    succeeded = {key for key, status in statuses(db_url, tenant).items() if status == "SUCCEEDED"}
    assert killed_at < COUNT, "the burst was over before the crash: the test proved nothing"
    assert set(keys) == succeeded  # every run recorded SUCCEEDED is stored: nothing acked was lost
    assert len(keys) == len(set(keys)) == COUNT  # re-publishes after the crash were deduplicated
    print(f"nats crash: {killed_at}/{COUNT} runs SUCCEEDED at the kill; all {COUNT} stored once after it")
