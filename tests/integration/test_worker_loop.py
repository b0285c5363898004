"""The worker's decisions, one step at a time, with a manual clock against the real Postgres: no sleeping.

As river's ``runOnce`` and db-scheduler's ``ManualScheduler`` tests do: the test sets the time, calls
``claim_once`` / ``rescue_once`` / ``heartbeat_once`` and looks at what was recorded and delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import msgspec
import nats
import psycopg
import pytest
from aiohttp import web

from shared.model import (
    CronTrigger,
    EventTarget,
    FixedDelayTrigger,
    HttpSpec,
    HttpTarget,
    MisfirePolicy,
    OverlapPolicy,
    QueueSpec,
    QueueTarget,
    RetryPolicy,
)
from shared.settings import Settings
from tests.integration.conftest import event_subject
from tests.integration.fleet_tools import run_rows, seed_due
from tests.integration.receivers import HttpReceiver, eventually
from worker.fairness import FireRates
from worker.loop import Worker
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    # Each test starts an hour after the last one's schedules: nothing left by another test is due by surprise.
    return ManualClock(datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))


WorkerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture
def make_worker(settings: Settings, nats_url: str, clock: ManualClock) -> WorkerFactory:
    def make(**overrides: object) -> contextlib.AbstractAsyncContextManager[Worker]:
        config = dataclasses.replace(settings, nats_url=nats_url, run_lease_sec=10.0, **overrides)  # type: ignore[arg-type]
        return open_worker(config, clock=clock)

    return make


async def settle(*workers: Worker) -> None:
    """Let every delivery started so far finish, and write what they recorded."""
    for worker in workers:
        tasks = list(worker._task_fires)
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.progress.flush()


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    r = HttpReceiver()
    await r.start()
    yield r
    await r.stop()


def keys_received(receiver: HttpReceiver, path: str) -> Counter[str]:
    return Counter(r.headers["Idempotency-Key"] for r in receiver.on(path))


async def test_claim_once_fires_what_the_clock_says_is_due(make_worker, clock, db_url, nats_url):
    tenant = f"clk-{uuid.uuid4().hex[:6]}"
    subject = f"loop.{tenant}"
    nc = await nats.connect(nats_url)
    got: list[str] = []

    async def on_message(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(msgspec.json.decode(msg.data)["id"])

    await nc.subscribe(event_subject(tenant, subject), cb=on_message)
    await nc.flush()
    base = clock.now
    seed_due(db_url, tenant, [base + timedelta(seconds=s) for s in (10, 20, 30)], EventTarget(event_topic=subject))
    try:
        async with make_worker() as worker:
            assert await worker.claim_once() == 0  # nothing due yet
            clock.advance(15)
            assert await worker.claim_once() == 1
            clock.advance(20)
            assert await worker.claim_once() == 2
            await settle(worker)
            await nc.flush()
            for _ in range(100):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.01)
        rows = run_rows(db_url, tenant)
        assert sorted(status for _, status, _ in rows) == ["SUCCEEDED"] * 3
        assert sorted(got) == sorted(key for key, _, _ in rows)
    finally:
        await nc.close()


async def test_a_resumed_worker_delivers_nothing_it_no_longer_holds(make_worker, clock, db_url, receiver):
    """Worker A is "frozen" (its clock runs, it neither heartbeats nor proceeds) past the lease with calls in
    flight; B takes the runs over and delivers them. A's calls then fail: A must not retry them, nor record."""
    release = asyncio.Event()

    async def first_hangs(n: int) -> web.Response:
        if n <= 5:  # A's calls: answered 503 (retryable) once A "wakes up"
            await release.wait()
            return web.Response(status=503)
        return web.Response(status=200)

    receiver.behave["/fenced"] = first_hangs
    tenant = f"fence-{uuid.uuid4().hex[:6]}"
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/fenced", timeout_sec=30))
    retry = RetryPolicy(max_attempts=5, backoff_sec=0.01, max_backoff_sec=0.01)
    seed_due(db_url, tenant, [clock.now] * 5, target, retry=retry)
    async with make_worker() as a, make_worker() as b:
        assert await a.claim_once() == 5
        for _ in range(200):
            if len(receiver.on("/fenced")) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(receiver.on("/fenced")) == 5
        clock.advance(11)  # past A's lease; A did not renew it
        assert await b.rescue_once() == 5
        await settle(b)
        release.set()  # A resumes: its calls come back as failures
        await settle(a)
    received = keys_received(receiver, "/fenced")
    assert len(received) == 5 and set(received.values()) == {2}, received  # A's first call and B's; no third
    assert {(status, attempt) for _, status, attempt in run_rows(db_url, tenant)} == {("SUCCEEDED", 1)}
    with psycopg.connect(db_url) as conn:
        holders = {r[0] for r in conn.execute("SELECT leased_by FROM runs WHERE tenant_id = %s", (tenant,))}
    assert holders == {b.id}


async def test_a_late_success_of_a_lost_run_is_not_recorded(make_worker, clock, db_url, receiver):
    release = asyncio.Event()

    async def slow_ok(n: int) -> web.Response:
        if n == 1:
            await release.wait()
            return web.json_response({"from": "a"})
        return web.json_response({"from": "b"})

    receiver.behave["/late"] = slow_ok
    tenant = f"late-{uuid.uuid4().hex[:6]}"
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/late", timeout_sec=30))
    seed_due(db_url, tenant, [clock.now], target)
    async with make_worker() as a, make_worker() as b:
        assert await a.claim_once() == 1
        for _ in range(200):
            if receiver.on("/late"):
                break
            await asyncio.sleep(0.01)
        clock.advance(11)
        assert await b.rescue_once() == 1
        await settle(b)
        release.set()
        await settle(a)
    with psycopg.connect(db_url) as conn:
        [(delivery, holder)] = conn.execute(
            "SELECT delivery, leased_by FROM runs WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert holder == b.id and '"b"' in delivery["response"]  # A's late answer did not overwrite B's record


async def test_the_heartbeat_keeps_a_long_call_from_being_taken_over(make_worker, clock, db_url, receiver):
    release = asyncio.Event()

    async def long_call(n: int) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    receiver.behave["/long"] = long_call
    tenant = f"hb-{uuid.uuid4().hex[:6]}"
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/long", timeout_sec=60))
    seed_due(db_url, tenant, [clock.now], target)
    async with make_worker() as a, make_worker() as b:
        assert await a.claim_once() == 1
        for _ in range(25):  # 25 x 8 s: a 200-second call, twenty leases long
            clock.advance(8)
            assert await a.heartbeat_once() == 0
            assert await b.rescue_once() == 0  # never taken over while A is alive
        release.set()
        await settle(a)
    assert len(receiver.on("/long")) == 1
    assert [status for _, status, _ in run_rows(db_url, tenant)] == ["SUCCEEDED"]


async def test_a_crashed_workers_runs_are_rescued_after_one_lease(make_worker, clock, db_url, receiver):
    tenant = f"crash-{uuid.uuid4().hex[:6]}"
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/crash"))
    seed_due(db_url, tenant, [clock.now] * 3, target)
    async with make_worker() as a:
        assert await a.claim_once() == 3
        for task in list(a._task_fires):
            task.cancel()  # the process died before delivering: its runs stay open, leased
        await asyncio.gather(*a._task_fires, return_exceptions=True)
    async with make_worker() as b:
        clock.advance(9.9)
        assert await b.rescue_once() == 0  # still leased
        clock.advance(0.2)
        assert await b.rescue_once() == 3  # RUN_LEASE_SEC after the claim, not a whole target timeout more
        await settle(b)
    assert len(receiver.on("/crash")) == 3
    assert [s for _, s, _ in run_rows(db_url, tenant)] == ["SUCCEEDED"] * 3


def insert_beat(db_url: str, worker: str, start: datetime, end: datetime) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO fleet_heartbeats (worker_id, started_at, beat_at) VALUES (%s, %s, %s)", (worker, start, end)
        )


async def test_an_occurrence_is_missed_only_if_the_fleet_was_down_at_its_due_time(make_worker, clock, db_url):
    tenant = f"miss-{uuid.uuid4().hex[:6]}"
    now = clock.now
    # Another worker was alive from an hour ago until 40 minutes ago, and again from 20 minutes ago.
    insert_beat(db_url, f"old-{tenant}", now - timedelta(hours=1), now - timedelta(minutes=40))
    insert_beat(db_url, f"busy-{tenant}", now - timedelta(minutes=20), now)
    target = EventTarget(event_topic=f"miss.{tenant}")
    [late] = seed_due(db_url, tenant, [now - timedelta(minutes=10)], target, policy=MisfirePolicy.SKIP)
    [missed] = seed_due(db_url, tenant, [now - timedelta(minutes=30)], target, policy=MisfirePolicy.SKIP)
    async with make_worker() as worker:
        await worker.heartbeat_once()
        await worker.claim_once()
        await settle(worker)
    with psycopg.connect(db_url) as conn:
        fired = {str(r[0]) for r in conn.execute("SELECT schedule_id FROM runs WHERE tenant_id = %s", (tenant,))}
        left = conn.execute("SELECT next_run_at FROM schedules WHERE id = %s", (missed,)).fetchone()
    # Late (the fleet was busy, not down): fired. Due while no worker was alive: SKIP applies.
    assert fired == {late}
    assert left == (None,)


async def test_a_quiet_tenant_is_claimed_in_the_first_batch_behind_a_burst(make_worker, clock, db_url):
    burst, quiet = f"burst-{uuid.uuid4().hex[:6]}", f"quiet-{uuid.uuid4().hex[:6]}"
    t0 = clock.now
    seed_due(db_url, burst, [t0] * 600, EventTarget(event_topic=f"fair.{burst}"))
    seed_due(db_url, quiet, [t0 + timedelta(seconds=0.2)], EventTarget(event_topic=f"fair.{quiet}"))
    clock.advance(0.3)
    async with make_worker(worker_batch_size=100) as worker:
        assert await worker.claim_once() == 100  # oldest first: no backlog was known yet
        assert len(run_rows(db_url, quiet)) == 0
        assert await worker.claim_once() == 100  # a full batch came back: under a backlog, the fair claim
        assert len(run_rows(db_url, quiet)) == 1  # oldest-first claiming would reach it after 600 others
        assert len(run_rows(db_url, burst)) == 199
        # Drain the rest; a claim takes no more than the deliveries in flight leave room for, so when it comes
        # back empty let those finish first (on a loaded machine they may still be under way).
        for _ in range(50):
            if not await worker.claim_once():
                await settle(worker)
                if not await worker.claim_once():
                    break
        await settle(worker)
    assert len(run_rows(db_url, burst)) == 600


async def test_a_tenant_over_its_fire_rate_waits_while_others_fire(make_worker, clock, db_url):
    heavy, light = f"heavy-{uuid.uuid4().hex[:6]}", f"light-{uuid.uuid4().hex[:6]}"
    t0 = clock.now
    seed_due(db_url, heavy, [t0] * 300, EventTarget(event_topic=f"rate.{heavy}"))
    async with make_worker(worker_batch_size=100) as worker:
        ticks = [1000.0]
        worker.monotonic = lambda: ticks[0]
        worker.rates = FireRates(50.0)
        assert await worker.claim_once() == 100  # a claim may overdraw: 50 - 100 = -50
        seed_due(db_url, light, [t0] * 5, EventTarget(event_topic=f"rate.{light}"))
        assert await worker.claim_once() == 5  # the heavy tenant is left out, the light one fires
        assert await worker.claim_once() == 0
        ticks[0] += 0.5  # -50 + 25: still over
        assert await worker.claim_once() == 0
        ticks[0] += 0.6  # back above zero
        assert await worker.claim_once() == 100
        await settle(worker)
    assert len(run_rows(db_url, heavy)) == 200 and len(run_rows(db_url, light)) == 5


def overlap_state(db_url: str, schedule_id: str) -> tuple[list[tuple[datetime, str, bool]], int]:
    """The schedule's runs (scheduled_for, status, waiting: no lease) and its overlapSkipped."""
    with psycopg.connect(db_url) as conn:
        runs = conn.execute(
            "SELECT scheduled_for, status, status = 'PENDING' AND lease_until IS NULL FROM runs"
            " WHERE schedule_id = %s ORDER BY scheduled_for",
            (schedule_id,),
        ).fetchall()
        row = conn.execute("SELECT overlap_skipped FROM schedules WHERE id = %s", (schedule_id,)).fetchone()
    return [(r[0], r[1], r[2]) for r in runs], row[0] if row else -1


async def claim_until(worker: Worker, db_url: str, schedule_id: str, runs: int) -> None:
    """Claim until the schedule has at least ``runs`` runs (rows other tests left due are claimed on the way)."""
    for _ in range(20):
        await worker.claim_once()
        if len(overlap_state(db_url, schedule_id)[0]) >= runs:
            return
    raise AssertionError(f"schedule {schedule_id} was not claimed")


def forget(db_url: str, schedule_id: str) -> None:
    """Delete a recurring schedule, so that it is not due in the next test's claims."""
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM schedules WHERE id = %s", (schedule_id,))


def run_keys(db_url: str, schedule_id: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT idempotency_key FROM runs WHERE schedule_id = %s ORDER BY scheduled_for", (schedule_id,)
        ).fetchall()
    return [r[0] for r in rows]


def sql_exec(db_url: str, statement: str, *params: object) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(statement, params)  # type: ignore[arg-type]


async def stop_deliveries(worker: Worker) -> None:
    """The process died mid-delivery: nothing more of those runs is recorded."""
    for task in list(worker._task_fires):
        task.cancel()
    await asyncio.gather(*worker._task_fires, return_exceptions=True)


@pytest.mark.parametrize(
    ("policy", "fired", "waiting", "skipped"),
    [
        (OverlapPolicy.ALLOW, [0, 1, 2, 3, 4, 5], [], 0),
        (OverlapPolicy.SKIP, [0], [], 5),
        (OverlapPolicy.BUFFER_ONE, [0], [1], 4),
        (OverlapPolicy.CANCEL_OTHER, [5], [], 5),
    ],
)
async def test_one_claim_of_several_due_occurrences_follows_the_overlap_policy(
    make_worker, clock, db_url, receiver, policy, fired, waiting, skipped
):
    # Six occurrences a minute apart come due in one claim (late, not missed: this worker was up all along).
    tenant = f"ovl-{uuid.uuid4().hex[:6]}"
    hang = asyncio.Event()

    async def hangs(n: int) -> web.Response:
        await hang.wait()
        return web.Response(status=200)

    receiver.behave["/ovl"] = hangs
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/ovl", timeout_sec=60))
    start = clock.now.replace(second=0) + timedelta(minutes=1)
    async with make_worker() as worker:
        [schedule_id] = seed_due(db_url, tenant, [start], target, trigger=CronTrigger(cron="* * * * *"), overlap=policy)
        clock.advance((start - clock.now).total_seconds() + 5 * 60)
        await claim_until(worker, db_url, schedule_id, 1)
        runs, count = overlap_state(db_url, schedule_id)
        await eventually(lambda: len(receiver.on("/ovl")) >= len(fired), timeout=10)
        await stop_deliveries(worker)
        # Long after every lease ran out, a rescue takes the fired runs over again, never a waiting one.
        clock.advance(3600)
        await worker.rescue_once()
        await asyncio.sleep(0.3)
        await stop_deliveries(worker)
    forget(db_url, schedule_id)
    waiting_keys = {key for (at, _, wait), key in zip(runs, run_keys(db_url, schedule_id), strict=True) if wait}
    assert not waiting_keys & {r.headers["Idempotency-Key"] for r in receiver.on("/ovl")}
    minutes = [int((at - start).total_seconds() // 60) for at, _, _ in runs]
    assert minutes == sorted(fired + waiting)
    assert [m for m, (_, _, wait) in zip(minutes, runs, strict=True) if wait] == waiting
    assert count == skipped


async def test_a_buffered_run_its_dead_predecessor_never_released_is_delivered(make_worker, clock, db_url, receiver):
    tenant = f"ovb-{uuid.uuid4().hex[:6]}"
    hang = asyncio.Event()

    async def first_hangs(n: int) -> web.Response:
        if n == 1:
            await hang.wait()
        return web.Response(status=200)

    receiver.behave["/ovb"] = first_hangs
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/ovb", timeout_sec=60))
    start = clock.now.replace(second=0) + timedelta(minutes=1)
    async with make_worker() as worker:
        [schedule_id] = seed_due(
            db_url, tenant, [start], target, trigger=CronTrigger(cron="* * * * *"), overlap=OverlapPolicy.BUFFER_ONE
        )
        clock.advance((start - clock.now).total_seconds() + 60)
        await claim_until(worker, db_url, schedule_id, 2)  # minute 0 fires, minute 1 waits
        await eventually(lambda: len(receiver.on("/ovb")) == 1, timeout=10)
        await stop_deliveries(worker)
        # Its run ended, but the release of the schedule was lost with the process (as if it crashed between).
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "UPDATE runs SET status = 'SUCCEEDED', finished_at = now() WHERE schedule_id = %s"
                " AND scheduled_for = %s",
                (schedule_id, start),
            )
    async with make_worker() as other:
        clock.advance(60)
        # Minute 2: the waiting minute 1 is handed over (it is in flight now), and minute 2 waits behind it.
        await claim_until(worker=other, db_url=db_url, schedule_id=schedule_id, runs=3)
        await asyncio.gather(*other._chores)
        assert [wait for _, _, wait in overlap_state(db_url, schedule_id)[0]] == [False, False, True]
        await other.rescue_once()
        await settle(other)  # minute 1 delivered; its end hands minute 2 over
        clock.advance(1)  # its lease starts when minute 1 finished, a moment after the claim
        await other.rescue_once()
        await settle(other)
    runs, count = overlap_state(db_url, schedule_id)
    forget(db_url, schedule_id)
    assert [(int((at - start).total_seconds() // 60), status) for at, status, _ in runs] == [
        (0, "SUCCEEDED"),
        (1, "SUCCEEDED"),
        (2, "SUCCEEDED"),
    ]
    assert count == 0


async def buffered_schedule(make_worker, clock, db_url, receiver, path: str, tenant: str) -> tuple[str, datetime]:
    """A BUFFER_ONE schedule claimed once: minute 0 in flight (its call hangs), minute 1 waiting; the worker is
    gone (its delivery stopped). Returns the schedule id and minute 0."""
    hang = asyncio.Event()

    async def first_hangs(n: int) -> web.Response:
        if n == 1:
            await hang.wait()
        return web.Response(status=200)

    receiver.behave[path] = first_hangs
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}{path}", timeout_sec=60))
    start = clock.now.replace(second=0) + timedelta(minutes=1)
    async with make_worker() as worker:
        [schedule_id] = seed_due(
            db_url, tenant, [start], target, trigger=CronTrigger(cron="* * * * *"), overlap=OverlapPolicy.BUFFER_ONE
        )
        clock.advance((start - clock.now).total_seconds() + 60)
        await claim_until(worker, db_url, schedule_id, 2)
        await eventually(lambda: len(receiver.on(path)) == 1, timeout=10)
        await stop_deliveries(worker)
    return schedule_id, start


async def test_deleting_a_schedule_cancels_its_waiting_run(make_worker, clock, db_url, receiver):
    tenant = f"ovd-{uuid.uuid4().hex[:6]}"
    schedule_id, _ = await buffered_schedule(make_worker, clock, db_url, receiver, "/ovd", tenant)
    forget(db_url, schedule_id)
    with psycopg.connect(db_url) as conn:
        errors = conn.execute(
            "SELECT status, error FROM runs WHERE schedule_id = %s ORDER BY scheduled_for", (schedule_id,)
        ).fetchall()
    assert errors[0][0] == "PENDING"  # minute 0 is still leased: a rescue finds its schedule gone, cancels it
    assert errors[1][0] == "CANCELLED" and "deleted" in errors[1][1]


async def test_an_edit_to_allow_hands_over_a_run_left_waiting(make_worker, clock, db_url, receiver):
    tenant = f"ova-{uuid.uuid4().hex[:6]}"
    schedule_id, start = await buffered_schedule(make_worker, clock, db_url, receiver, "/ova", tenant)
    # Minute 0 ended without handing minute 1 over (its worker died between), then the policy became ALLOW.
    sql_exec(db_url, "UPDATE runs SET status = 'SUCCEEDED' WHERE schedule_id = %s AND scheduled_for = %s",
             schedule_id, start)  # fmt: skip
    sql_exec(db_url, "UPDATE schedules SET overlap = 'ALLOW' WHERE id = %s", schedule_id)
    async with make_worker() as other:
        clock.advance(60)
        await claim_until(other, db_url, schedule_id, 3)  # minute 2 fires (ALLOW), minute 1 is handed over
        await asyncio.gather(*other._chores)
        clock.advance(1)
        await other.rescue_once()
        await settle(other)
    runs, _ = overlap_state(db_url, schedule_id)
    forget(db_url, schedule_id)
    assert [status for _, status, _ in runs] == ["SUCCEEDED"] * 3
    with psycopg.connect(db_url) as conn:
        left = conn.execute("SELECT count(*) FROM schedules WHERE overlap_buffered_run_id IS NOT NULL AND id = %s",
                            (schedule_id,)).fetchone()  # fmt: skip
    assert left == (0,)


async def answered_after_a_takeover(a: Worker, b: Worker, clock, db_url, receiver, path, schedule_id) -> asyncio.Event:
    """Worker A claims the schedule's run and freezes in its call; after A's lease B takes the run over (its call
    waits for the event returned); then A's call is answered and A records what it may (fenced: nothing)."""
    a_may_answer, b_may_answer = asyncio.Event(), asyncio.Event()

    async def calls(n: int) -> web.Response:
        await (a_may_answer if n == 1 else b_may_answer).wait()
        return web.Response(status=200)

    receiver.behave[path] = calls
    await claim_until(a, db_url, schedule_id, 1)
    await eventually(lambda: len(receiver.on(path)) == 1, timeout=10)
    clock.advance(15)  # past A's lease: B rescues the run
    assert await b.rescue_once() >= 1
    await eventually(lambda: len(receiver.on(path)) == 2, timeout=10)
    a_may_answer.set()
    await asyncio.gather(*a._task_fires, return_exceptions=True)
    await a.progress.flush()
    return b_may_answer


async def test_a_late_outcome_of_a_run_taken_over_does_not_release_its_schedule(make_worker, clock, db_url, receiver):
    # A SKIP schedule: A's late success is not written, so the schedule still waits for B's delivery.
    tenant = f"ovf-{uuid.uuid4().hex[:6]}"
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/ovf", timeout_sec=120))
    start = clock.now.replace(second=0) + timedelta(minutes=1)
    async with make_worker() as a, make_worker() as b:
        [schedule_id] = seed_due(
            db_url, tenant, [start], target, trigger=CronTrigger(cron="* * * * *"), overlap=OverlapPolicy.SKIP
        )
        clock.advance((start - clock.now).total_seconds())
        await answered_after_a_takeover(a, b, clock, db_url, receiver, "/ovf", schedule_id)
        clock.advance(60)  # minute 1 is due while B's delivery is in flight
        await claim_until(b, db_url, schedule_id, 1)
        runs, skipped = overlap_state(db_url, schedule_id)
        await stop_deliveries(b)
    forget(db_url, schedule_id)
    assert [status for _, status, _ in runs] == ["PENDING"]  # B still delivers it; minute 1 got no run
    assert skipped >= 1


async def test_a_queue_run_superseded_while_it_was_published_is_withdrawn(make_worker, clock, db_url, nats_url):
    # CANCEL_OTHER cancels a QUEUE run that is still open; if its worker was publishing it at that moment, the
    # publish goes through, its success is refused (the run is cancelled), and its message is withdrawn.
    tenant = f"ovq-{uuid.uuid4().hex[:6]}"
    target = QueueTarget(queue=QueueSpec(topic="ovq.jobs"))
    start = clock.now.replace(second=0) + timedelta(minutes=1)
    async with make_worker() as worker:
        [schedule_id] = seed_due(
            db_url, tenant, [start], target, trigger=CronTrigger(cron="* * * * *"), overlap=OverlapPolicy.CANCEL_OTHER
        )
        publisher = worker.deliverer.publisher
        real_send = publisher.send

        async def published_then_superseded(fire):  # type: ignore[no-untyped-def]
            result = await real_send(fire)
            sql_exec(db_url, "UPDATE runs SET status = 'CANCELLED', lease_until = NULL, error = 'superseded'"
                     " WHERE id = %s", fire.run_id)  # fmt: skip
            return result

        publisher.send = published_then_superseded  # type: ignore[method-assign]
        clock.advance((start - clock.now).total_seconds())
        await claim_until(worker, db_url, schedule_id, 1)
        await settle(worker)
        with psycopg.connect(db_url) as conn:
            status, delivery = conn.execute(
                "SELECT status, delivery FROM runs WHERE schedule_id = %s", (schedule_id,)
            ).fetchone()  # type: ignore[misc]
        js = worker.deliverer.publisher.js
        info = await js.stream_info(delivery["stream"])
    forget(db_url, schedule_id)
    assert status == "CANCELLED" and delivery["withdrawn"] is True
    assert info.state.messages == 0  # the message never reaches a consumer


async def test_a_late_outcome_of_a_run_taken_over_does_not_rearm_fixed_delay(make_worker, clock, db_url, receiver):
    # The same class for FIXED_DELAY parking: A's late success is not written, so the schedule stays parked
    # behind the run B still delivers (re-arming it would start the next run while that one is in flight).
    tenant = f"fdl-{uuid.uuid4().hex[:6]}"
    target = HttpTarget(http=HttpSpec(url=f"{receiver.url}/fdl", timeout_sec=120))
    async with make_worker() as a, make_worker() as b:
        [schedule_id] = seed_due(db_url, tenant, [clock.now], target, trigger=FixedDelayTrigger(delay_sec=60))
        b_may_answer = await answered_after_a_takeover(a, b, clock, db_url, receiver, "/fdl", schedule_id)
        parked = next_run(db_url, schedule_id)
        b_may_answer.set()
        await settle(b)
        rearmed = next_run(db_url, schedule_id)
    forget(db_url, schedule_id)
    assert parked is None  # still waiting for B's delivery
    assert rearmed is not None  # B's end re-armed it


def next_run(db_url: str, schedule_id: str) -> datetime | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT next_run_at FROM schedules WHERE id = %s", (schedule_id,)).fetchone()
    return row[0] if row else None


async def test_cancel_other_also_cancels_a_run_an_earlier_buffer_one_left_waiting(make_worker, clock, db_url, receiver):
    tenant = f"ovc-{uuid.uuid4().hex[:6]}"
    schedule_id, _ = await buffered_schedule(make_worker, clock, db_url, receiver, "/ovc", tenant)
    sql_exec(db_url, "UPDATE schedules SET overlap = 'CANCEL_OTHER' WHERE id = %s", schedule_id)
    async with make_worker() as other:
        clock.advance(60)
        await claim_until(other, db_url, schedule_id, 3)  # minute 2 supersedes minutes 0 (in flight) and 1
        await asyncio.gather(*other._chores)
        runs, _ = overlap_state(db_url, schedule_id)
        await stop_deliveries(other)
    forget(db_url, schedule_id)
    assert [status for _, status, _ in runs] == ["CANCELLED", "CANCELLED", "PENDING"]


async def test_held_queue_runs_of_one_tenant_do_not_starve_anothers(make_worker, clock, db_url, nats_url):
    # Tenant A's two QUEUE schedules hold (nobody consumes their messages); tenant B's message is consumed. With
    # a page of one, the poll must get past A's schedules to release B's, not look at A's first page for ever.
    target = QueueTarget(queue=QueueSpec(topic="ovp.jobs"))
    start = clock.now.replace(second=0) + timedelta(minutes=1)
    a, b = f"ovpa-{uuid.uuid4().hex[:6]}", f"ovpb-{uuid.uuid4().hex[:6]}"
    cron = CronTrigger(cron="* * * * *")
    held = [seed_due(db_url, a, [start], target, trigger=cron, overlap=OverlapPolicy.SKIP)[0] for _ in range(2)]
    [mine] = seed_due(db_url, b, [start], target, trigger=cron, overlap=OverlapPolicy.SKIP)
    async with make_worker(worker_batch_size=1) as worker:
        clock.advance((start - clock.now).total_seconds())
        for schedule_id in [*held, mine]:
            await claim_until(worker, db_url, schedule_id, 1)
        await settle(worker)
        js = worker.deliverer.publisher.js
        consumer = await js.pull_subscribe(f"queues.{b}.ovp.jobs", durable="ovp")
        [msg] = await consumer.fetch(1, timeout=5)
        await msg.ack_sync()
        released = [await worker.poll_queue_holds() for _ in range(3)]
        with psycopg.connect(db_url) as conn:
            holding = dict(conn.execute(
                "SELECT id::text, overlap_run_id IS NOT NULL FROM schedules WHERE id = ANY(%s::uuid[])",
                ([*held, mine],),
            ).fetchall())  # fmt: skip
    for schedule_id in [*held, mine]:
        forget(db_url, schedule_id)
    assert sum(released) == 1
    assert holding == {held[0]: True, held[1]: True, mine: False}
