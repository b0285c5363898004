"""`make bench MODE=direct` (diagnostic): how fast the fleet claims, fires and advances due schedules seeded
straight into the table, against the database's own limit.

For each size N and worker count K it seeds N CRON schedules that all come due at one instant T0 (EVENT
targets on an embedded NATS), then measures:

* **scheduler**: K `python -m worker` processes, from T0 until every run is SUCCEEDED (published to NATS and
  recorded): fires/s and due-to-publish lag (run finished - scheduled time) percentiles;
* **bare-sql**: K connections looping over one statement that only claims with SKIP LOCKED, advances
  next_run_at and inserts the history rows (no Python per row, no publishing): the same figures, which are
  what Postgres itself allows on this machine.

Both run in the same process against the same server, so the ratio is meaningful on a noisy machine even when
the absolute figures are not. Steady-rate runs then spread due times evenly, at rates the fleet keeps up
with, and report the lag.
Usage: `python -m bench --mode direct [--sizes 10000,100000] [--workers 1,2,4] [--steady 2000x20,4000x20]`.
What users see (schedules created through the API, deliveries observed at receivers) is bench/users.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from shared.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
BATCH = 100

# The database's own limit: claim, advance and record in one statement, looped by each connection.
BARE_CLAIM_ADVANCE = """
WITH due AS (
    SELECT id FROM schedules
     WHERE enabled AND next_run_at <= clock_timestamp()
     ORDER BY next_run_at LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED),
advanced AS (
    UPDATE schedules AS s
       SET next_run_at = s.next_run_at + interval '1 minute', last_run_at = s.next_run_at
      FROM due WHERE s.id = due.id
    RETURNING s.id, s.tenant_id, s.last_run_at)
INSERT INTO runs (id, schedule_id, tenant_id, scheduled_for, idempotency_key, status, attempt, finished_at)
SELECT gen_random_uuid(), id, tenant_id, last_run_at, id::text || ':' || last_run_at::text, 'SUCCEEDED', 1,
       clock_timestamp()
  FROM advanced
"""


@dataclass
class Result:
    size: int
    workers: int
    mode: str
    fires_per_sec: float
    p50: float
    p95: float
    p99: float
    cpu_per_fire_us: float | None = None


def seed(url: str, size: int, due: datetime, spread_sec: float = 0.0) -> None:
    """``size`` CRON schedules next due from ``due`` on, spread evenly over ``spread_sec``."""
    target = '{"kind":"EVENT","eventTopic":"bench.fire"}'
    # Yearly, so that no schedule comes due a second time while a run is being measured: every worker fire
    # counted is one of the N seeded occurrences, like the bare loop's.
    trigger = '{"type":"CRON","cron":"0 0 1 1 *"}'
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY schedules (id, tenant_id, name, tz, trigger, target, misfire_policy, next_run_at) FROM STDIN"
        ) as copy:
            for i in range(size):
                at = due + timedelta(seconds=spread_sec * i / size)
                copy.write_row((uuid.uuid4(), f"bench-{i % 50}", f"s{i}", "UTC", trigger, target, "FIRE_ONCE", at))
        conn.commit()
        conn.execute("ANALYZE schedules")
        conn.commit()


def lag_stats(url: str) -> tuple[float, float, float, datetime]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                      (ORDER BY extract(epoch FROM finished_at - scheduled_for)),
                      max(finished_at)
                 FROM runs WHERE status = 'SUCCEEDED'"""
        ).fetchone()
    assert row is not None
    p50, p95, p99 = row[0]
    return p50, p95, p99, row[1]


def all_done(conn: psycopg.Connection, last_due: datetime) -> bool:
    """Every seeded occurrence claimed (no schedule still due by ``last_due``) and no run still open: two index
    probes, so that polling does not take CPU from the workers being measured (a count(*) scans all runs)."""
    row = conn.execute(
        """SELECT NOT EXISTS (SELECT 1 FROM schedules WHERE enabled AND next_run_at <= %(due)s)
              AND NOT EXISTS (SELECT 1 FROM runs WHERE status IN ('PENDING', 'RETRYING'))""",
        {"due": last_due},
    ).fetchone()
    return bool(row and row[0])


def count_done(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCEEDED'").fetchone()
    return int(row[0]) if row else 0


def fresh_database(server: EmbeddedPostgres, template: str) -> str:
    return server.create_database(f"bench_{uuid.uuid4().hex[:8]}", template=template)


def lead_time(size: int) -> float:
    return 2.0 + size / 25_000  # time to seed before T0


def run_bare(url: str, size: int, connections: int, batch: int = BATCH) -> Result:
    t0 = datetime.now(UTC) + timedelta(seconds=lead_time(size))
    seed(url, size, t0)
    time.sleep(max(0.0, (t0 - datetime.now(UTC)).total_seconds()))

    def loop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while conn.execute(BARE_CLAIM_ADVANCE, {"limit": batch}).rowcount:
                pass

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p50, p95, p99, last = lag_stats(url)
    return Result(size, connections, "bare-sql", size / (last - t0).total_seconds(), p50, p95, p99)


def run_scheduler(url: str, nats_url: str, size: int, workers: int, spread_sec: float = 0.0) -> Result:
    env = {
        **os.environ,
        "POSTGRES_URL": url,
        "NATS_URL": nats_url,
        "LOG_LEVEL": "warning",
        "WORKER_BATCH_SIZE": str(BATCH),
        "WORKER_METRICS_PORT": "0",  # K workers on one host would fight over the port (an error log each)
    }
    procs = [subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env) for _ in range(workers)]
    try:
        t0 = datetime.now(UTC) + timedelta(seconds=lead_time(size))
        seed(url, size, t0, spread_sec)
        # CPU from T0 on: what the workers spend firing, not importing and connecting.
        time.sleep(max(0.0, (t0 - datetime.now(UTC)).total_seconds()))
        cpu_before = [_cpu_seconds(p.pid) for p in procs]
        deadline = time.monotonic() + 600
        with psycopg.connect(url, autocommit=True) as conn:
            while not all_done(conn, t0 + timedelta(seconds=spread_sec)):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("workers did not finish the batch")
                time.sleep(0.2)
        cpu = sum(_cpu_seconds(p.pid) - before for p, before in zip(procs, cpu_before, strict=True))
        if (done := count_done(url)) != size:
            raise RuntimeError(f"{done} runs succeeded, {size} expected")
        p50, p95, p99, last = lag_stats(url)
        return Result(
            size,
            workers,
            "scheduler" if not spread_sec else f"{size / spread_sec:.0f}/s",
            size / (last - t0).total_seconds(),
            p50,
            p95,
            p99,
            cpu_per_fire_us=cpu / size * 1e6,
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(w) for w in args.workers.split(",")]

    root = Path(tempfile.mkdtemp(prefix="sched-bench-", dir="/tmp"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg")  # durable settings (fsync on), like production
    nats_server = EmbeddedNats(root / "nats", throwaway=True)
    results: list[Result] = []
    try:
        pg.start()
        nats_url = nats_server.start()
        template = "bench_template"
        migrate(pg.create_database(template))
        print(
            f"{'N':>7} {'K':>2} {'mode':<10} {'fires/s':>9} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} "
            f"{'vs bare':>7} {'cpu/fire':>9}",
            flush=True,
        )
        for size in sizes:
            for k in counts:
                bare = run_bare(fresh_database(pg, template), size, k)
                ours = run_scheduler(fresh_database(pg, template), nats_url, size, k)
                results += [bare, ours]
                for r in (bare, ours):
                    ratio = f"{r.fires_per_sec / bare.fires_per_sec:.2f}"
                    cpu = f"{r.cpu_per_fire_us:.0f} µs" if r.cpu_per_fire_us is not None else ""
                    print(
                        f"{r.size:>7} {r.workers:>2} {r.mode:<10} {r.fires_per_sec:>9.0f} {r.p50:>7.3f} "
                        f"{r.p95:>7.3f} {r.p99:>7.3f} {ratio:>7} {cpu:>9}",
                        flush=True,
                    )
        print("\nsteady rate (due times spread evenly; fires/s is the offered rate when keeping up):", flush=True)
        for spec in filter(None, args.steady.split(",")):
            rate, seconds = (float(x) for x in spec.split("x"))
            r = run_scheduler(fresh_database(pg, template), nats_url, int(rate * seconds), 2, spread_sec=seconds)
            print(
                f"{r.size:>7} {r.workers:>2} {r.mode:<10} {r.fires_per_sec:>9.0f} {r.p50:>7.3f} "
                f"{r.p95:>7.3f} {r.p99:>7.3f} {'':>7} {r.cpu_per_fire_us:>6.0f} µs",
                flush=True,
            )
        mean_ratio = statistics.mean(
            o.fires_per_sec / b.fires_per_sec for b, o in zip(results[::2], results[1::2], strict=True)
        )
        print(f"\nmean scheduler / bare-sql throughput ratio: {mean_ratio:.2f}")
    finally:
        nats_server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
