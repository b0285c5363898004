"""Run history partitions against a real Postgres: made ahead, dropped when expired, open runs kept, reads by
id pruned to one partition, one maintainer at a time, and only the workers' role may maintain."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.db.partitions import PartitionStore
from shared.db.pool import make_pool
from shared.db.run_ids import manual_run_id, occurrence_run_id
from tests.integration.receivers import eventually
from worker.maintenance import Maintenance, PartitionConfig, partition_name, slot_start
from worker.runtime import open_worker

pytestmark = pytest.mark.asyncio

MINUTE = timedelta(minutes=1)
CONFIG = PartitionConfig(span=MINUTE, ahead=2, retention=5 * MINUTE)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[object]:
    pool = make_pool(db_url, min_size=1, max_size=2, name="maintenance-test", role="scheduler_worker")
    await pool.open()
    yield pool
    await pool.close()


def maintenance(pool: object, now: datetime, config: PartitionConfig = CONFIG) -> Maintenance:
    return Maintenance(PartitionStore(pool), config, lambda: now, interval_sec=60)


def partitions(db_url: str) -> dict[str, tuple[datetime | None, datetime | None]]:
    with psycopg.connect(db_url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT name, starts, ends FROM runs_partitions()")}


def insert_run(db_url: str, tenant: str, scheduled_for: datetime, status: str, run_id: str | None = None) -> str:
    schedule_id = str(uuid.uuid4())
    key = f"{schedule_id}:{scheduled_for.isoformat()}"
    run_id = run_id or occurrence_run_id(key, scheduled_for)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, attempt)
               VALUES (%s, %s, %s, %s, %s, %s, 1)""",
            (run_id, schedule_id, tenant, scheduled_for, key, status),
        )
    return run_id


def home(db_url: str, run_id: str) -> str | None:
    """The partition holding a run, or None when it is gone."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT tableoid::regclass::text FROM runs WHERE id = %s", (run_id,)).fetchone()
    return row[0] if row else None


async def test_partitions_are_created_ahead_and_rows_in_the_default_move_in(pool, db_url, tenant):
    now = datetime.now(UTC)
    current = slot_start(now, MINUTE)
    # Recorded before its partition existed (a fast clock, a fleet that never ran maintenance): the default.
    early = insert_run(db_url, tenant, current + 2 * MINUTE + timedelta(seconds=5), "PENDING")
    assert home(db_url, early) == "runs_default"

    report = await maintenance(pool, now).run_once()
    assert report is not None and not report.failed
    made = partitions(db_url)
    for k in (-1, 0, 1, 2):
        starts = current + k * MINUTE
        assert made[partition_name(starts)] == (starts, starts + MINUTE)
    assert home(db_url, early) == partition_name(current + 2 * MINUTE)

    # Nothing more to do until the clock moves on a slot.
    again = await maintenance(pool, now).run_once()
    assert again is not None and again.created == []
    later = await maintenance(pool, now + MINUTE).run_once()
    assert later is not None and later.created == [partition_name(current + 3 * MINUTE)]


async def test_an_expired_partition_is_dropped_but_its_open_runs_are_kept(pool, db_url, tenant, client, headers):
    now = datetime.now(UTC)
    old = slot_start(now, MINUTE) - 20 * MINUTE
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT runs_partition_create(%s, %s, %s)", (partition_name(old), old, old + MINUTE))
    at = old + timedelta(seconds=30)
    done = insert_run(db_url, tenant, at, "SUCCEEDED")
    failed = insert_run(db_url, tenant, at + timedelta(seconds=1), "FAILED")
    pending = insert_run(db_url, tenant, at + timedelta(seconds=2), "PENDING")
    retrying = insert_run(db_url, tenant, at + timedelta(seconds=3), "RETRYING")
    assert home(db_url, pending) == partition_name(old)

    report = await maintenance(pool, now).run_once()
    assert report is not None
    assert partition_name(old) in report.dropped and report.kept >= 2
    assert partition_name(old) not in partitions(db_url)
    assert home(db_url, done) is None and home(db_url, failed) is None
    assert home(db_url, pending) == home(db_url, retrying) == "runs_default"

    # The API still reads them by id (pruning now lands on the default partition).
    for run_id, status in ((pending, "PENDING"), (retrying, "RETRYING")):
        response = await client.get(f"/runs/{run_id}", headers=headers())
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    assert (await client.get(f"/runs/{done}", headers=headers())).status_code == 404

    # Once finished and expired, the default partition lets them go too; while open, never.
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE runs SET status = 'SUCCEEDED' WHERE id = %s", (pending,))
    report = await maintenance(pool, now).run_once()
    assert report is not None and report.expired >= 1
    assert home(db_url, pending) is None
    assert home(db_url, retrying) == "runs_default"


async def test_one_worker_at_a_time_does_the_maintenance(pool, db_url):
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(1548668992)")  # another worker's round in progress
        assert await maintenance(pool, datetime.now(UTC)).run_once() is None
        holder.execute("SELECT pg_advisory_unlock(1548668992)")
    assert await maintenance(pool, datetime.now(UTC)).run_once() is not None


async def test_only_expired_partitions_can_be_dropped_and_only_by_the_workers(db_url, pool):
    await maintenance(pool, datetime.now(UTC)).run_once()
    current = partition_name(slot_start(datetime.now(UTC), MINUTE))
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE scheduler_worker")
        # However the worker's clock or settings are wrong, a partition that has not ended stays.
        assert conn.execute("SELECT runs_partition_drop(%s)", (current,)).fetchone() == (None,)
        assert conn.execute("SELECT runs_partition_drop('runs_default')").fetchone() == (None,)
        assert conn.execute("SELECT runs_partition_drop('schedules')").fetchone() == (None,)
        with pytest.raises(psycopg.errors.RaiseException, match="not a runs partition name"):
            conn.execute("SELECT runs_partition_create('schedules2', now(), now() + interval '1 minute')")
        conn.rollback()
        conn.execute("SET ROLE scheduler_api")
        for call in (
            "SELECT runs_partition_drop('x')",
            "SELECT runs_default_expire(now(), 1)",
            "SELECT runs_partition_create('runs_p1', now(), now())",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(call)
            conn.rollback()
            conn.execute("SET ROLE scheduler_api")
        # Partitions are reached only through runs (its grants and policies), never directly.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM {current}")
    assert current in partitions(db_url)


async def test_a_read_by_id_touches_one_partition_and_older_ids_are_still_found(pool, db_url, tenant, client, headers):
    now = datetime.now(UTC)
    await maintenance(pool, now).run_once()
    new_id = insert_run(db_url, tenant, now, "SUCCEEDED")
    old_id = insert_run(db_url, tenant, now, "SUCCEEDED", run_id=str(uuid.uuid4()))  # an id made before 0040
    with psycopg.connect(db_url) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                """EXPLAIN SELECT * FROM runs WHERE id = %(id)s
                     AND scheduled_for >= run_id_scheduled_from(%(id)s)
                     AND scheduled_for < run_id_scheduled_until(%(id)s)""",
                {"id": new_id},
            )
        )
    assert plan.count(" on runs_") == 1, plan
    for run_id in (new_id, old_id):
        response = await client.get(f"/runs/{run_id}", headers=headers())
        assert response.status_code == 200 and response.json()["id"] == run_id
    # Another tenant's run is not found, whatever partition it is in.
    assert (await client.get(f"/runs/{new_id}", headers=headers(tenant_id="other-" + tenant))).status_code == 404


async def test_a_manual_run_id_names_the_partition_of_its_time(pool, db_url, tenant, client, headers):
    await maintenance(pool, datetime.now(UTC)).run_once()
    body = {
        "name": "manual",
        "trigger": {"type": "CRON", "cron": "0 9 1 1 *"},
        "target": {"kind": "EVENT", "eventTopic": "a.b"},
    }
    created = await client.post("/schedules", json=body, headers=headers())
    assert created.status_code == 201, created.text
    run = await client.post(f"/schedules/{created.json()['id']}/run", headers=headers())
    assert run.status_code in (200, 201, 202), run.text
    run_id = run.json()["id"]
    assert uuid.UUID(run_id).version == 8
    scheduled = datetime.fromisoformat(run.json()["scheduledFor"].replace("Z", "+00:00"))
    assert home(db_url, run_id) == partition_name(slot_start(scheduled, MINUTE))
    assert manual_run_id(scheduled)[:13] == run_id[:13]  # the same millisecond


async def test_running_workers_keep_partitions_ahead_and_record_runs_in_them(
    settings, nats_url, db_url, client, headers
):
    config = dataclasses.replace(
        settings,
        nats_url=nats_url,
        worker_poll_max_sec=0.2,
        runs_partition_sec=60,
        runs_partitions_ahead=3,
        runs_maintenance_interval_sec=0.5,
    )
    # Two workers: the advisory lock makes them take turns, neither fails.
    async with open_worker(config) as a, open_worker(config) as b:
        tasks = [asyncio.create_task(w.run()) for w in (a, b)]
        try:
            current = slot_start(datetime.now(UTC), MINUTE)
            wanted = {partition_name(current + k * MINUTE) for k in range(4)}
            await eventually(lambda: wanted <= set(partitions(db_url)), timeout=15)

            soon = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
            body = {
                "name": "partitioned",
                "trigger": {"type": "FIXED_DELAY", "delaySec": 1, "startAt": soon},
                "target": {"kind": "EVENT", "eventTopic": "partitions.fire"},
            }
            created = await client.post("/schedules", json=body, headers=headers())
            assert created.status_code == 201, created.text
            runs_url = f"/schedules/{created.json()['id']}/runs"

            async def three_succeeded() -> bool:
                items = (await client.get(runs_url, headers=headers())).json()["items"]
                return sum(r["status"] == "SUCCEEDED" for r in items) >= 3

            # FIXED_DELAY re-arms only after its run's SUCCEEDED was written: updates by id find their rows.
            await eventually(three_succeeded, timeout=20)
            for run in (await client.get(runs_url, headers=headers())).json()["items"]:
                assert (home(db_url, run["id"]) or "").startswith("runs_p")
                one = await client.get(f"/runs/{run['id']}", headers=headers())
                assert one.status_code == 200 and one.json()["id"] == run["id"]
        finally:
            for w in (a, b):
                w.request_stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_a_drop_that_would_wait_on_a_busy_table_gives_up_and_is_done_next_round(pool, db_url, tenant):
    now = datetime.now(UTC)
    old = slot_start(now, MINUTE) - 30 * MINUTE
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT runs_partition_create(%s, %s, %s)", (partition_name(old), old, old + MINUTE))
    with psycopg.connect(db_url) as reader:
        reader.execute("SELECT count(*) FROM runs")  # a long transaction holding a lock on runs
        started = asyncio.get_running_loop().time()
        report = await maintenance(pool, now).run_once()
        assert report is not None and partition_name(old) in report.failed
        assert partition_name(old) not in report.dropped
        # Claims would queue behind the detach for as long as it waits: that is at most the lock timeout.
        assert asyncio.get_running_loop().time() - started < 10
        reader.rollback()
    report = await maintenance(pool, now).run_once()
    assert report is not None and partition_name(old) in report.dropped


async def test_a_partition_is_created_while_runs_of_its_range_keep_arriving(pool, db_url, tenant):
    # A new database whose fleet records runs before any partition exists: they go to the default partition,
    # and creating the slot must still succeed with more of them arriving all the while.
    starts = slot_start(datetime.now(UTC), MINUTE) + 40 * MINUTE
    stop = threading.Event()
    inserted = refused = 0

    def record_runs() -> None:
        nonlocal inserted, refused
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    insert_into(conn, tenant, starts + timedelta(seconds=inserted % 60))
                    inserted += 1
                except psycopg.errors.CheckViolation:
                    refused += 1  # routed by the partitions of before the attach: rolled back, nothing stored

    thread = threading.Thread(target=record_runs)
    thread.start()
    try:
        await asyncio.sleep(0.3)
        config = PartitionConfig(span=MINUTE, ahead=1, retention=5 * MINUTE)
        report = await maintenance(pool, starts + timedelta(seconds=1), config).run_once()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert report is not None and partition_name(starts) in report.created, report
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM runs_default WHERE scheduled_for >= %s AND scheduled_for < %s",
            (starts, starts + MINUTE),
        ).fetchone()
        moved = conn.execute(f"SELECT count(*) FROM {partition_name(starts)}").fetchone()
    assert left == (0,)
    assert moved == (inserted,) and inserted > 10


def insert_into(conn: psycopg.Connection, tenant: str, scheduled_for: datetime) -> None:
    key = f"{uuid.uuid4()}:{scheduled_for.isoformat()}"
    conn.execute(
        """INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key)
           VALUES (%s, gen_random_uuid(), %s, %s, %s)""",
        (occurrence_run_id(key, scheduled_for), tenant, scheduled_for, key),
    )
