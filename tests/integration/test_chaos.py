"""Faults injected into a running fleet: Postgres restarts (fast and SIGKILL), a NATS restart, a worker SIGKILL,
a worker frozen (SIGSTOP) inside and outside its claim for longer than a lease, an HTTP target down for longer
than its retries allow.

Each counts the occurrences due, those delivered (distinct idempotency keys), duplicates and runs rows, and
asserts: nothing lost, duplicates only with the same key (none from a resumed worker), no run left open after
recovery, recovery within bounds. Small counts, so each test stays well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import psycopg
import pytest
from aiohttp import web

from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from devstack.processes import port_accepts, wait_until
from shared.db.migrate import migrate
from shared.errors import SchedulerError
from shared.model import EventTarget, HttpSpec, HttpTarget, RetryPolicy
from shared.settings import Settings
from tests.integration.conftest import event_subject
from tests.integration.fleet_tools import duplicates, open_runs, run_rows, seed_due, spawn_worker, statuses
from tests.integration.receivers import HttpReceiver, eventually
from worker.runtime import open_worker

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def in_seconds(seconds: float, count: int, window: float) -> list[datetime]:
    start = datetime.now(UTC) + timedelta(seconds=seconds)
    return [start + timedelta(seconds=window * i / count) for i in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RestartablePostgres:
    """A durable Postgres of the module's own (fsync on), restarted on the same port."""

    def __init__(self, root: Path) -> None:
        self.path = root / "pg"
        self.server = EmbeddedPostgres(self.path)
        self.port = 0

    def start(self) -> str:
        url = self.server.start()
        self.port = self.server._port or 0
        return url

    def restart_fast(self) -> None:
        self.server.stop()
        self.start_again()

    def kill(self) -> None:
        postmaster = self.server._read_postmaster()
        assert postmaster is not None
        children = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(postmaster.pid)], capture_output=True, text=True).stdout.split()
        ]
        os.kill(postmaster.pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        wait_until(lambda: not port_accepts(self.port), 10)

    def start_again(self) -> None:
        self.server = EmbeddedPostgres(self.path, port=self.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def chaos_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sched-chaos-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def own_pg(chaos_root: Path) -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres(chaos_root)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def chaos_db(own_pg: RestartablePostgres) -> str:
    url = own_pg.server.create_database(f"chaos_{uuid.uuid4().hex[:8]}")
    migrate(url)
    return url


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        p.wait(10)


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    r = HttpReceiver()
    await r.start()
    yield r
    await r.stop()


def keys(receiver: HttpReceiver, path: str) -> Counter[str]:
    return Counter(r.headers["Idempotency-Key"] for r in receiver.on(path))


def report(name: str, due: int, received: Counter[str], db_url: str, tenant: str, **figures: object) -> None:
    rows = run_rows(db_url, tenant)
    extra = " ".join(f"{k}={v}" for k, v in figures.items())
    print(
        f"\nchaos {name}: due={due} delivered={len(received)} duplicates={duplicates(received)} "
        f"runs={len(rows)} statuses={dict(statuses(db_url, tenant))} {extra}"
    )


def assert_nothing_lost(due: int, received: Counter[str], db_url: str, tenant: str, status: str = "SUCCEEDED") -> None:
    rows = run_rows(db_url, tenant)
    assert len(received) == due  # every occurrence delivered
    assert len(rows) == due and len({key for key, _, _ in rows}) == due  # recorded exactly once each
    assert {key for key, _, _ in rows} == set(received)  # duplicates only ever with the same key
    assert statuses(db_url, tenant) == Counter({status: due})  # none left open


@pytest.mark.parametrize("how", ["fast", "sigkill"])
async def test_postgres_restart_loses_nothing(how, own_pg, chaos_db, nats_url, workers, receiver):
    tenant = f"pg-{how}-{uuid.uuid4().hex[:6]}"
    due = 300
    seed_due(chaos_db, tenant, in_seconds(1.5, due, 4.0), HttpTarget(http=HttpSpec(url=f"{receiver.url}/pg")))
    workers.extend(spawn_worker(chaos_db, nats_url) for _ in range(2))
    await eventually(lambda: len(receiver.on("/pg")) >= 80, timeout=30, step=0.02)
    down = time.monotonic()
    if how == "fast":
        await asyncio.to_thread(own_pg.restart_fast)
    else:
        await asyncio.to_thread(own_pg.kill)
        await asyncio.to_thread(own_pg.start_again)
    back = time.monotonic()
    await eventually(lambda: len(keys(receiver, "/pg")) == due, timeout=40, step=0.1)
    await eventually(lambda: statuses(chaos_db, tenant)["SUCCEEDED"] == due, timeout=30, step=0.2)
    drained = time.monotonic()
    received = keys(receiver, "/pg")
    report(
        f"postgres-{how}",
        due,
        received,
        chaos_db,
        tenant,
        outage_s=f"{back - down:.1f}",
        drain_after_s=f"{drained - back:.1f}",
    )
    assert_nothing_lost(due, received, chaos_db, tenant)
    assert all(p.poll() is None for p in workers)  # the workers rode it out


async def test_worker_sigkill_is_recovered_within_a_lease(chaos_db, nats_url, workers, receiver):
    async def slowish(n: int) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(status=200)

    receiver.behave["/kill"] = slowish
    tenant = f"kill-{uuid.uuid4().hex[:6]}"
    due = 200
    seed_due(chaos_db, tenant, in_seconds(1.0, due, 2.0), HttpTarget(http=HttpSpec(url=f"{receiver.url}/kill")))
    workers.extend(spawn_worker(chaos_db, nats_url) for _ in range(2))  # RUN_LEASE_SEC: the default (10 s)
    await eventually(lambda: len(receiver.on("/kill")) >= 60, timeout=30, step=0.02)
    workers[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    workers[0].wait(10)
    await eventually(lambda: statuses(chaos_db, tenant)["SUCCEEDED"] == due, timeout=40, step=0.1)
    recovered = time.monotonic() - killed
    received = keys(receiver, "/kill")
    report("worker-sigkill", due, received, chaos_db, tenant, recovered_s=f"{recovered:.1f}")
    assert_nothing_lost(due, received, chaos_db, tenant)
    assert recovered <= 15 + 2  # the lease (10 s) + a rescue round + delivery; 60 s + a timeout before


async def test_a_worker_frozen_inside_its_claim_delays_its_schedules_by_seconds(chaos_db, nats_url, workers, dev_dir):
    """This process claims (its real claim code, on the workers' guarded connections) and freezes between the
    claim and its commit, as a SIGSTOPped worker would: the whole process sleeps, the row locks are held until
    Postgres ends the transaction (WORKER_DB_TIMEOUT_SEC); another worker fires the schedules meanwhile."""
    tenant = f"stopin-{uuid.uuid4().hex[:6]}"
    due = 40
    seed_due(chaos_db, tenant, in_seconds(0.0, due, 0.01), EventTarget(event_topic=f"chaos.{tenant}"))
    other = spawn_worker(chaos_db, nats_url, WORKER_DB_TIMEOUT_SEC="2")
    workers.append(other)
    settings = Settings(postgres_url=chaos_db, nats_url=nats_url, auth_mode="dev", dev_data_dir=str(dev_dir),
                        worker_metrics_port=0, worker_db_timeout_sec=2.0)  # fmt: skip
    freeze = 10.0
    async with open_worker(settings) as frozen:
        frozen_at = datetime.now(UTC)

        def plan_then_freeze(rows):  # type: ignore[no-untyped-def]
            time.sleep(freeze)  # the whole process stops, like SIGSTOP
            return frozen._plan(rows, datetime.now(UTC), 1000)

        with pytest.raises(SchedulerError):  # its transaction was ended for it: nothing it claimed commits
            await frozen.store.claim(datetime.now(UTC), 100, 0, [], plan_then_freeze)
    await eventually(lambda: statuses(chaos_db, tenant)["SUCCEEDED"] == due, timeout=30, step=0.1)
    with psycopg.connect(chaos_db) as conn:
        [(latest, holders)] = conn.execute(
            "SELECT max(created_at), count(*) FILTER (WHERE leased_by = %s) FROM runs WHERE tenant_id = %s",
            (frozen.id, tenant),
        ).fetchall()
    delay = (latest - frozen_at).total_seconds()
    print(f"\nchaos sigstop-inside-claim: due={due} runs={len(run_rows(chaos_db, tenant))} freeze={freeze}s "
          f"schedules fired {delay:.1f}s after the freeze began")  # fmt: skip
    assert holders == 0
    assert delay < freeze - 3  # bounded by the timeout (2 s), not by the freeze


async def test_a_worker_frozen_longer_than_its_lease_delivers_nothing_on_resume(chaos_db, nats_url, workers, receiver):
    async def answers_after_1s(n: int) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(status=200)

    receiver.behave["/stop"] = answers_after_1s
    tenant = f"stopout-{uuid.uuid4().hex[:6]}"
    due = 20
    # timeoutSec 2: the frozen worker's calls "time out" while it is stopped although the 200 is in the socket.
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/stop", timeout_sec=2))
    retry = RetryPolicy(max_attempts=5, backoff_sec=0.1, max_backoff_sec=0.2)
    seed_due(chaos_db, tenant, in_seconds(0.5, due, 0.1), target, retry=retry)
    lease = {"RUN_LEASE_SEC": "3"}
    victim = spawn_worker(chaos_db, nats_url, **lease)
    workers.append(victim)
    await eventually(lambda: len(receiver.on("/stop")) >= due, timeout=30, step=0.02)
    victim.send_signal(signal.SIGSTOP)
    workers.append(spawn_worker(chaos_db, nats_url, **lease))
    await eventually(lambda: statuses(chaos_db, tenant)["SUCCEEDED"] == due, timeout=30, step=0.1)
    await asyncio.sleep(1.5)  # the other worker's answers are all in; the victim stays frozen past 3 leases
    victim.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    await asyncio.sleep(4.0)  # time for the resumed worker to retry, deliver or record, if it were going to
    after_resume = [r for r in receiver.on("/stop") if r.started >= resumed]
    received = keys(receiver, "/stop")
    report("sigstop-outside-claim", due, received, chaos_db, tenant, after_resume=len(after_resume))
    assert not after_resume  # fenced: nothing from the resumed worker
    assert max(received.values()) <= 2  # the frozen worker's call and the rescuer's, never a third
    assert_nothing_lost(due, received, chaos_db, tenant)
    assert {attempt for _, _, attempt in run_rows(chaos_db, tenant)} == {1}
    assert victim.poll() is None


async def test_an_http_target_down_longer_than_its_retries_fails_every_run_once(chaos_db, nats_url, workers, receiver):
    async def down(n: int) -> web.Response:
        return web.Response(status=503)

    receiver.behave["/down"] = down
    tenant = f"down-{uuid.uuid4().hex[:6]}"
    due = 30
    nc = await nats.connect(nats_url)
    letters: Counter[str] = Counter()

    async def on_letter(msg) -> None:  # type: ignore[no-untyped-def]
        data = msgspec.json.decode(msg.data)["data"]
        if data["scheduleId"] in ids:
            letters[data["runId"]] += 1

    await nc.subscribe("scheduler.deadletter", cb=on_letter)
    await nc.flush()
    retry = RetryPolicy(max_attempts=3, backoff_sec=0.1, max_backoff_sec=0.2)
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/down"))
    ids = set(seed_due(chaos_db, tenant, in_seconds(0.5, due, 1.0), target, retry=retry))
    try:
        workers.extend(spawn_worker(chaos_db, nats_url) for _ in range(2))
        await eventually(lambda: statuses(chaos_db, tenant)["FAILED"] == due, timeout=40, step=0.1)
        await eventually(lambda: len(letters) == due, timeout=10)
        received = keys(receiver, "/down")
        report("http-down", due, received, chaos_db, tenant, dead_letters=sum(letters.values()))
        assert set(received.values()) == {3}  # exactly the attempts allowed, for every occurrence
        assert_nothing_lost(due, received, chaos_db, tenant, status="FAILED")
        assert {attempt for _, _, attempt in run_rows(chaos_db, tenant)} == {3}
    finally:
        await nc.close()


@dataclasses.dataclass
class OwnNats:
    """A nats-server on a fixed port (restarts keep it), with JetStream storage under ``path``."""

    path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = EmbeddedNats(self.path)._binary
        command = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.path)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: port_accepts(self.port), 10)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


async def test_nats_restart_loses_no_durable_event(chaos_db, workers, chaos_root):
    server = OwnNats(chaos_root / f"nats-{uuid.uuid4().hex[:6]}", free_port())
    server.path.mkdir()
    server.start()
    tenant = f"nats-{uuid.uuid4().hex[:6]}"
    subject = f"chaos.{tenant}"
    try:
        # EVENTs are durable by default: the workers make the tenant's stream, which captures its namespace.
        due = 300
        seed_due(chaos_db, tenant, in_seconds(1.0, due, 4.0), EventTarget(event_topic=f"{subject}.tick"))
        workers.extend(spawn_worker(chaos_db, server.url) for _ in range(2))
        await eventually(lambda: statuses(chaos_db, tenant)["SUCCEEDED"] >= 60, timeout=30, step=0.02)
        server.kill()
        await asyncio.sleep(1.0)
        server.start()
        await eventually(lambda: statuses(chaos_db, tenant)["SUCCEEDED"] == due, timeout=40, step=0.1)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        sub = await js.subscribe(event_subject(tenant, subject) + ".>", ordered_consumer=True)
        received: Counter[str] = Counter()
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            while True:
                msg = await sub.next_msg(timeout=1.0)
                received[msgspec.json.decode(msg.data)["id"]] += 1
        await nc.close()
        report("nats-sigkill", due, received, chaos_db, tenant)
        assert_nothing_lost(due, received, chaos_db, tenant)
        assert open_runs(chaos_db, tenant) == 0
    finally:
        for p in workers:
            p.kill()
        server.kill()
