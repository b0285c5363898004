"""`python -m bench.reads`: what partitioning costs the reads and writes by id, as the API and workers make them.

For each partition count P it builds a run history of P hourly partitions (ROWS runs each), then times the
named statements as the API and the workers send them: ``run_get`` (GET /runs/{id}, in a tenant-scoped
transaction as the API's role) for ids of the current layout (pruned to one partition) and of the older layout
(every partition probed), and ``run_update_many`` for a batch of 100 recent runs, as the progress writer sends
it. Then the claim path's writes: ``schedule_advance_and_record`` recording 100 new runs and
``run_published_many`` marking them SUCCEEDED, per batch. P = 0 is the baseline: the table before
partitioning (sql/ up to 0039), with the statements and (uuid5) run ids as they were.
Usage: `python -m bench.reads [--partitions 0,17,340] [--rows 2000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from devstack.postgres import EmbeddedPostgres
from shared.db.migrate import migrate, migration_files
from shared.db.pool import make_pool
from shared.db.queries import sql
from shared.db.run_ids import id_span, occurrence_run_id
from worker.maintenance import partition_name

TENANT = "bench"

# The two statements as they were before sql/0040, for the baseline.
RUN_GET_BEFORE = "SELECT * FROM runs WHERE tenant_id = %(tenant_id)s AND id = %(id)s"
_SPAN = "AND r.scheduled_for >= %(from)s AND r.scheduled_for < %(until)s"
RUN_UPDATE_BEFORE = sql("run_update_many").replace(_SPAN, "")
RUN_PUBLISHED_BEFORE = sql("run_published_many").replace(_SPAN, "")
RECORD_BEFORE = sql("schedule_advance_and_record").replace("ON CONFLICT (id, scheduled_for)", "ON CONFLICT (id)")
_UUID5_NAMESPACE = uuid.UUID("5c4ed01e-0000-4000-8000-00000000f14e")


def build(url: str, partitions: int, rows: int, root: Path) -> tuple[list[str], list[str]]:
    """Migrate, make the partitions (hourly, the newest current), fill them; return new-layout and old ids."""
    if partitions == 0:
        before = root / f"sql-{uuid.uuid4().hex[:6]}"
        before.mkdir()
        for path in migration_files():
            if path.name < "0040":
                shutil.copy(path, before)
        migrate(url, before)
    else:
        migrate(url)
    span = timedelta(hours=1)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now - span * (max(partitions, 1) - 1)
    new_ids, old_ids = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(partitions):
            starts = first + i * span
            conn.execute("SELECT runs_partition_create(%s, %s, %s)", (partition_name(starts), starts, starts + span))
        columns = "id, schedule_id, tenant_id, scheduled_for, idempotency_key, status"
        with conn.cursor().copy(f"COPY runs ({columns}) FROM STDIN") as copy:
            for i in range(max(partitions, 1)):
                for j in range(rows):
                    at = first + i * span + span * j / rows
                    key = f"s{j}:{at.isoformat()}"
                    legacy = j % 20 == 0
                    run_id = str(uuid.uuid4()) if legacy else occurrence_run_id(key, at)
                    (old_ids if legacy else new_ids).append(run_id)
                    copy.write_row((run_id, uuid.uuid4(), TENANT, at, key, "RETRYING"))
        conn.execute("ANALYZE runs")
    return new_ids, old_ids


async def time_reads(
    url: str, new_ids: list[str], old_ids: list[str], before: bool, rounds: int = 300
) -> dict[str, float]:
    results = {}
    get = RUN_GET_BEFORE if before else sql("run_get")
    pool = make_pool(url, min_size=1, max_size=1, name="bench-api", role="scheduler_api")
    await pool.open()
    try:
        for label, ids in (("get new id", new_ids), ("get old id", old_ids)):
            sample = [random.choice(ids) for _ in range(rounds + 20)]
            times = []
            for run_id in sample:
                async with pool.connection() as conn:
                    t0 = time.perf_counter()
                    await conn.execute(sql("tenant_scope"), {"tenant_id": TENANT})
                    cur = await conn.execute(get, {"tenant_id": TENANT, "id": run_id})
                    assert await cur.fetchone() is not None
                    times.append(time.perf_counter() - t0)
            results[label] = statistics.median(times[20:]) * 1e3  # the first warm the plans and pages
    finally:
        await pool.close()
    worker_pool = make_pool(url, min_size=1, max_size=1, name="bench-worker", role="scheduler_worker")
    await worker_pool.open()
    try:
        recent = new_ids[-1000:]  # the newest hour: what is still open
        times = []
        for _ in range(60):
            batch = random.sample(recent, 100)
            params = {
                "ids": batch,
                "status": ["RETRYING"] * 100,
                "attempt": [2] * 100,
                **{k: [None] * 100 for k in ("started_at", "finished_at", "next_attempt_at", "lease_until")},
                **{k: [None] * 100 for k in ("duration_ms", "http_status", "error", "delivery")},
                **id_span(batch),
            }
            async with worker_pool.connection() as conn, conn.transaction():
                t0 = time.perf_counter()
                await conn.execute(RUN_UPDATE_BEFORE if before else sql("run_update_many"), params)
                times.append(time.perf_counter() - t0)
        results["update 100"] = statistics.median(times[10:]) * 1e3
    finally:
        await worker_pool.close()
    return results


async def time_writes(url: str, before: bool, batches: int = 100) -> dict[str, float]:
    record_times, publish_times = [], []
    pool = make_pool(url, min_size=1, max_size=1, name="bench-worker", role="scheduler_worker")
    await pool.open()
    try:
        start = datetime.now(UTC)
        for b in range(batches):
            at = start + timedelta(milliseconds=b)
            schedule_ids = [str(uuid.uuid4()) for _ in range(100)]
            keys = [f"{s}:{at.isoformat()}" for s in schedule_ids]
            if before:
                ids = [str(uuid.uuid5(_UUID5_NAMESPACE, k)) for k in keys]
            else:
                ids = [occurrence_run_id(k, at) for k in keys]
            record = {
                **{k: [] for k in ("ids", "next_run_at", "last_run_at", "parked_run_id")},
                "worker": "bench",
                "now": at,
                "run_ids": ids,
                "schedule_ids": schedule_ids,
                "tenant_ids": [TENANT] * 100,
                "scheduled_for": [at] * 100,
                "keys": keys,
                "lease_until": [at] * 100,
            }
            published = {
                "ids": ids,
                "attempt": [1] * 100,
                "subject": ["bench"] * 100,
                "started_at": [at] * 100,
                "finished_at": [at] * 100,
                "duration_ms": [1] * 100,
                **({} if before else id_span(ids)),
            }
            async with pool.connection() as conn:
                t0 = time.perf_counter()
                await conn.execute(RECORD_BEFORE if before else sql("schedule_advance_and_record"), record)
                await conn.commit()
                t1 = time.perf_counter()
                await conn.execute(RUN_PUBLISHED_BEFORE if before else sql("run_published_many"), published)
                await conn.commit()
                record_times.append(t1 - t0)
                publish_times.append(time.perf_counter() - t1)
    finally:
        await pool.close()
    return {"record 100": statistics.median(record_times) * 1e3, "publish 100": statistics.median(publish_times) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reads")
    parser.add_argument("--partitions", default="0,17,340")
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sched-bench-reads-", dir="/tmp"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg", throwaway=True)
    try:
        pg.start()
        print(
            f"{'partitions':>10} {'get new id ms':>14} {'get old id ms':>14} {'update 100 ms':>14} "
            f"{'record 100 ms':>14} {'publish 100 ms':>15}",
            flush=True,
        )
        for count in (int(p) for p in args.partitions.split(",")):
            url = pg.create_database(f"reads_{uuid.uuid4().hex[:8]}")
            new_ids, old_ids = build(url, count, args.rows, root)
            r = asyncio.run(time_reads(url, new_ids, old_ids, before=count == 0))
            r |= asyncio.run(time_writes(url, before=count == 0))
            label = f"{count}" if count else "0 (before)"
            print(
                f"{label:>10} {r['get new id']:>14.3f} {r['get old id']:>14.3f} {r['update 100']:>14.3f} "
                f"{r['record 100']:>14.3f} {r['publish 100']:>15.3f}",
                flush=True,
            )
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
