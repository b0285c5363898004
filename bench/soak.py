"""`make soak`: a fixed load for a long time; is the fleet steady (flat lag, memory and table size)?

Measures the fleet's burst capacity first (a 10k burst, 2 workers), then seeds CRON schedules with a seconds field
firing every ``--period`` seconds at ``--load`` (default 50%) of it, phases spread over the period, and runs 2
worker processes for ``--minutes`` (default 10; `make soak SOAK_MINUTES=5`). Run history is kept for
``--retention-min`` minutes: through RUNS_RETENTION_DAYS when the workers know it (partitioned history),
otherwise by this driver deleting finished runs older than that (a stand-in, reported as such).

Each minute it prints: fires, lag p50/p99 (run started - scheduled time) of the runs created that minute, each
worker's RSS, Postgres' RSS (postmaster + backends, private memory), rows and size of `runs` and `schedules`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.__main__ import fresh_database, run_scheduler
from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from shared.db.migrate import migrate
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TENANTS = 20


def seed(url: str, count: int, period: int) -> None:
    target = '{"kind":"EVENT","eventTopic":"soak.fire"}'
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY schedules (id, tenant_id, name, tz, trigger, target, misfire_policy, next_run_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                phase = i % period
                trigger = f'{{"type":"CRON","cron":"{phase}/{period} * * * * *"}}'
                first = now + timedelta(seconds=(phase - now.second) % period)
                copy.write_row(
                    (uuid.uuid4(), f"soak-{i % TENANTS}", f"s{i}", "UTC", trigger, target, "FIRE_ONCE", first)
                )
        conn.commit()
        conn.execute("ANALYZE schedules")
        conn.commit()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def postgres_rss_mib(postmaster: int) -> float:
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return sum(rss_kib(int(p), "RssAnon") for p in [postmaster, *children]) / 1024


def table_size(conn: psycopg.Connection, table: str) -> tuple[int, float]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM """
        + table
        + """),
                  (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                    WHERE c.oid = %(t)s::regclass
                       OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %(t)s::regclass))""",
        {"t": table},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    parser.add_argument("--load", type=float, default=0.5, help="share of the measured capacity")
    parser.add_argument("--rate", type=float, default=0.0, help="fires/s (skips the capacity measurement)")
    parser.add_argument("--period", type=int, default=10)
    parser.add_argument("--retention-min", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per report line")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sched-soak-", dir="/tmp"))
    tmp.chmod(0o755)
    pg = EmbeddedPostgres(tmp / "pg")  # durable settings, like production
    nats_server = EmbeddedNats(tmp / "nats", throwaway=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        nats_url = nats_server.start()
        template = "soak_template"
        migrate(pg.create_database(template))
        rate = args.rate
        if not rate:
            capacity = run_scheduler(fresh_database(pg, template), nats_url, 10_000, 2).fires_per_sec
            rate = capacity * args.load
            print(f"capacity (10k burst, 2 workers): {capacity:.0f} fires/s; load: {rate:.0f} fires/s", flush=True)
        url = fresh_database(pg, template)
        count = int(rate * args.period)
        seed(url, count, args.period)
        knows_retention = "runs_retention_days" in {f.name for f in fields(Settings)}
        env = {
            **os.environ,
            "POSTGRES_URL": url,
            "NATS_URL": nats_url,
            "LOG_LEVEL": "error",
            "WORKER_METRICS_PORT": "0",
        }
        if knows_retention:
            env["RUNS_RETENTION_DAYS"] = str(args.retention_min / 1440)
        procs = [subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env) for _ in range(2)]
        retention = "RUNS_RETENTION_DAYS (partition drops)" if knows_retention else "driver DELETE (stand-in)"
        print(
            f"{count} schedules every {args.period}s = {rate:.0f} fires/s for {args.minutes:g} min, "
            f"retention {args.retention_min:g} min via {retention}",
            flush=True,
        )
        print(
            f"{'min':>4} {'fires':>7} {'p50 ms':>7} {'p99 ms':>7} {'w1 MiB':>7} {'w2 MiB':>7} {'pg MiB':>7} "
            f"{'runs rows':>10} {'runs MiB':>9} {'sched MiB':>9} {'pruned':>8}",
            flush=True,
        )
        postmaster = pg._read_postmaster()
        started = time.monotonic()
        minute = 0
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() - started < args.minutes * 60:
                window_start = datetime.now(UTC)
                time.sleep(args.interval)
                minute += 1
                pruned = 0
                if not knows_retention:
                    cur = conn.execute(
                        """DELETE FROM runs WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
                              AND created_at < now() - make_interval(secs => %s)""",
                        (args.retention_min * 60,),
                    )
                    pruned = cur.rowcount
                row = conn.execute(
                    """SELECT count(*), percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
                              (ORDER BY extract(epoch FROM started_at - scheduled_for))
                         FROM runs WHERE created_at >= %s AND started_at IS NOT NULL""",
                    (window_start,),
                ).fetchone()
                assert row is not None
                fires, (p50, p99) = row[0], row[1] or (0.0, 0.0)
                runs_rows, runs_mib = table_size(conn, "runs")
                _, sched_mib = table_size(conn, "schedules")
                w1, w2 = (rss_kib(p.pid) / 1024 for p in procs)
                pg_mib = postgres_rss_mib(postmaster.pid) if postmaster else 0.0
                print(
                    f"{minute:>4} {fires:>7} {p50 * 1000:>7.1f} {p99 * 1000:>7.1f} {w1:>7.1f} {w2:>7.1f} "
                    f"{pg_mib:>7.1f} {runs_rows:>10} {runs_mib:>9.1f} {sched_mib:>9.1f} {pruned:>8}",
                    flush=True,
                )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        nats_server.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
